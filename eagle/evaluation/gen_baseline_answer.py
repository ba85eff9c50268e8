"""`python -m eagle.evaluation.gen_baseline_answer`: plain-decoding (baseline) answers.

Same flags as ``eagle.evaluation.gen_answer`` (see its docstring); ``--help`` lists them.
"""

from __future__ import annotations

from eagle.evaluation import gen_answer


def main(argv: list[str] | None = None) -> None:
    """Answer-file generation with the default method ``baseline``."""
    gen_answer.main(argv, method="baseline")


if __name__ == "__main__":
    main()
