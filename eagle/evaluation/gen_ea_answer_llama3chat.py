"""`python -m eagle.evaluation.gen_ea_answer_llama3chat`: alias for Llama-3 chat models.

The defaults of this entry point (method, chat template, system prompt, tree) are its row of
``eagle.evaluation.gen_answer.SCRIPTS``; the flags are ``gen_answer``'s (``--help`` lists them).
"""

from __future__ import annotations

from eagle.evaluation.gen_answer import script_main

main = script_main("gen_ea_answer_llama3chat")

if __name__ == "__main__":
    main()
