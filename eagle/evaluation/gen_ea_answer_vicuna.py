"""`python -m eagle.evaluation.gen_ea_answer_vicuna`: alias for Vicuna models.

Same flags as ``eagle.evaluation.gen_answer`` (see its docstring); ``--help`` lists them.
"""

from __future__ import annotations

from eagle.evaluation import gen_answer


def main(argv: list[str] | None = None) -> None:
    """Answer-file generation with ``--method eagle --template vicuna_v1.1`` as defaults."""
    gen_answer.main(argv, method="eagle", template="vicuna_v1.1")


if __name__ == "__main__":
    main()
