"""The chat layer shared by data generation, evaluation and the web UI.

Modules: ``templates`` (the one registry of ``--template`` names: "auto", the built-ins and
FastChat's conversation templates, with rendering a conversation to a prompt) and ``formatter``
(``ChatFormatter``: prompt ids from a conversation, answer text from generated ids, and
``common_prefix`` for comparing answer texts). Benchmark question sets live beside it in
``eagle.benchmarks``. Nothing here imports ``eagle.ge_data``, ``eagle.evaluation`` or
``eagle.application``; they all import this.
"""
