"""Data generation for draft-head training (``python -m eagle.ge_data``).

Modules: ``sharegpt`` (reading and cleaning chats), ``render`` (``input_ids`` and the assistant
``loss_mask`` under a chat template from ``eagle.chat.templates``), ``regenerate`` (the target's
own answers), ``capture`` (features into shards), ``manifest`` (the ``eagle-features/1`` folder
description), ``batching`` (length bucketing and padding), ``vocab`` (EAGLE-3 draft vocabulary),
``options`` / ``main`` (the command line) and ``allocation`` (the same split over worker
processes / GPUs).
"""
