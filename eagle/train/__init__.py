"""Draft-head training (EAGLE-1 feature regression, EAGLE-3 training-time test).

Modules: ``config`` (typed, strict JSON configs), ``data`` (samples of the ``eagle.ge_data``
features, read through ``eagle.ge_data.feature_format``; split, batches), ``loss`` (the unrolled
loss, its slow reference, the wrapped module), ``build`` (target parts, head, optimizer,
schedule), ``trainer`` (the loop, evaluation, checkpoints, export), ``state`` (resumable
training states in safetensors and JSON, never pickle) and ``main`` (the
``python -m eagle.train.main`` / ``accelerate launch`` entry point). Example configs and a
DeepSpeed config live in ``eagle/train/configs``.
"""
