"""Data generation for draft-head training (``python -m eagle.ge_data``).

Modules: ``sharegpt`` (reading and cleaning chats), ``render`` (``input_ids`` and the assistant
``loss_mask`` under a chat template from ``eagle.chat.templates``), ``regenerate`` (the target's
own answers), ``onpolicy`` (first turns answered and captured in one pass), ``capture``
(features into shards), ``feature_format`` (the ``eagle-features/1`` folder: its one writer and
reader, also used by ``eagle.train``), ``batching`` (length bucketing and padding), ``vocab``
(EAGLE-3 draft vocabulary), ``options`` / ``main`` (the command line) and ``allocation`` (the
same split over worker processes / GPUs).
"""
