"""`python -m eagle.evaluation.gen_baseline_answer_llama2chat`: alias for Llama-2 chat models.

The original's script of this name (SafeAILab/EAGLE eagle/evaluation/gen_baseline_answer_llama2chat.py @08dc06c) is kept as a name; the prompt is the tokenizer's
own chat template (``--template auto``). Same flags as ``eagle.evaluation.gen_answer`` (see its
docstring); ``--help`` lists them.
"""

from __future__ import annotations

from eagle.evaluation import gen_answer


def main(argv: list[str] | None = None) -> None:
    """Answer-file generation with ``--method baseline`` and the tokenizer's chat template."""
    gen_answer.main(argv, method="baseline")


if __name__ == "__main__":
    main()
