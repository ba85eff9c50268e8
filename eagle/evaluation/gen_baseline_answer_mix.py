"""`python -m eagle.evaluation.gen_baseline_answer_mix`: alias for Mixtral instruct models.

The defaults of this entry point (method, chat template, system prompt, tree) are its row of
``eagle.evaluation.gen_answer.SCRIPTS``; the flags are ``gen_answer``'s (``--help`` lists them).
"""

from __future__ import annotations

from eagle.evaluation.gen_answer import script_main

main = script_main("gen_baseline_answer_mix")

if __name__ == "__main__":
    main()
