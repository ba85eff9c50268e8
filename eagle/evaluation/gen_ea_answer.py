"""`python -m eagle.evaluation.gen_ea_answer`: EAGLE answers for a benchmark.

Same flags as ``eagle.evaluation.gen_answer`` (see its docstring); ``--help`` lists them.
"""

from __future__ import annotations

from eagle.evaluation import gen_answer


def main(argv: list[str] | None = None) -> None:
    """Answer-file generation with the default method ``eagle``."""
    gen_answer.main(argv, method="eagle")


if __name__ == "__main__":
    main()
