"""Speed and acceptance evaluation (MT-bench, HumanEval, custom question files).

Two steps, each a command line with a ``main(argv=None)``:

1. ``python -m eagle.evaluation.gen_ea_answer`` / ``gen_baseline_answer`` (``gen_answer``):
   answer the questions with one or more methods and append timed answers to answer files.
2. ``python -m eagle.evaluation.speed``: compare answer files (speedup, τ, tokens/s, per
   category) as a table, JSON and an optional plot.

Modules: ``methods`` (what is timed),
``runner`` (the resumable answer loop), ``answers`` (answer-file format), ``metrics`` (the
numbers), ``speed`` and ``plot`` (the report). Question sets come from ``eagle.benchmarks``
and prompts from the chat layer ``eagle.chat`` (the template registry data generation and the
web UI use too).
"""
