"""`python -m eagle.evaluation.gen_ea_answer_llama3chat`: alias for Llama-3 chat models.

Same flags as ``eagle.evaluation.gen_answer`` (see its docstring); ``--help`` lists them.
"""

from __future__ import annotations

from eagle.evaluation import gen_answer


def main(argv: list[str] | None = None) -> None:
    """Answer-file generation with ``--method eagle`` and the tokenizer's chat template."""
    gen_answer.main(argv, method="eagle")


if __name__ == "__main__":
    main()
