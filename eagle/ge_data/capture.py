"""Feature capture: rendered samples through the target, into resumable safetensors shards.

Owns the batching of samples for the target's forward, the split of its output into the EAGLE-1
feature (``hidden``: the post-norm last state) and the EAGLE-3 features (``aux``: three layers
concatenated, low/mid/high), and the shard writer.

What a shard stores and how it is named is ``eagle.ge_data.feature_format``'s: the samples
concatenated, their ``input_ids`` and ``loss_mask``, ``hidden`` (unless an EAGLE-3-only capture
stores the target's top-K distribution instead, which is all training needs of it), ``aux``
with EAGLE-3 features, and with ``target_topk`` K > 0 the target's next-token distribution at
every position cut to its K most likely tokens.

Design choices:
- One forward per batch asks for every needed layer at once (``hidden_states[-1]`` and the
  EAGLE-3 layers). Samples are right-padded; a window of a few batches is cut into batches of
  similar length (``batching.bucket_by_length``: at most ``batch_size`` samples and
  ``batch_tokens`` padded tokens), which keeps padding small, and the window is then stored in
  input order.
- Shards are written to a temporary name and renamed, then the manifest is rewritten, so a crash
  leaves only complete shards listed. Resuming skips samples by id (the ids are stored in each
  shard), so no sample is ever stored twice.
- Features are cast to the storage dtype on the device, before the copy to the CPU.
- The target distribution is computed once here, in fp32 from the target's own ``lm_head``, in
  row chunks so the [rows, V] logits stay small; training then reads K numbers per position
  instead of recomputing a vocabulary-wide projection every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eagle.ge_data.batching import bucket_by_length, pad_rows
from eagle.ge_data.feature_format import (
    Manifest,
    StoredSample,
    TopK,
    pack_samples,
    part_manifest_name,
    shard_name,
    write_manifest,
    write_shard,
)
from eagle.ge_data.render import RenderedExample
from eagle.ge_data.vocab import (
    argmax_counts_from_shards,
    count_argmax,
    count_tokens,
    counts_from_shards,
)

HIDDEN_LAYER = -1  # hidden_states index of the EAGLE-1 feature (post-norm last state)
STORAGE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class CaptureSettings:
    aux_layers: tuple[int, ...] | None  # hidden_states indices of the EAGLE-3 features, or None
    feature_dtype: torch.dtype = torch.bfloat16
    batch_size: int = 8  # most samples per forward
    batch_tokens: int = 8192  # most padded tokens per forward (a longer sample goes alone)
    target_topk: int = 0  # store the target's top-K next-token distribution (0: none)
    store_hidden: bool = True  # store the post-norm last state (EAGLE-1 feature)

    @property
    def layers(self) -> tuple[int, ...]:
        return (HIDDEN_LAYER, *(self.aux_layers or ()))


def target_topk(lm_head: Any, last: Tensor, k: int, chunk: int = 1024) -> TopK:
    """The target's top-k next-token distribution from its post-norm last states.

    last [L, H] -> TopK(ids [L, k] int32, probs [L, k] fp16), softmax over the full vocabulary
    in fp32, computed ``chunk`` rows at a time.
    """
    ids, probs = [], []
    for part in last.split(chunk):
        p = lm_head(part).float().softmax(-1)
        top = p.topk(k, dim=-1)
        ids.append(top.indices.to(torch.int32))
        probs.append(top.values.to(torch.float16))
    return TopK(torch.cat(ids).cpu(), torch.cat(probs).cpu())


@torch.inference_mode()
def capture_batch(
    target: Any, examples: Sequence[RenderedExample], settings: CaptureSettings
) -> list[tuple[Tensor | None, Tensor | None, TopK | None]]:
    """One forward of a right-padded batch -> per sample (hidden [L, H] or None, aux [L, 3H]
    or None, top-k distribution or None)."""
    ids = pad_rows([e.input_ids for e in examples])
    mask = pad_rows([torch.ones_like(e.input_ids) for e in examples])
    raw = target.capture(ids.to(target.device), mask.to(target.device), settings.layers)
    width = target.hidden_size
    features = raw.to(settings.feature_dtype).cpu()  # [B, L, H * (1 + aux layers)]
    out = []
    for b, example in enumerate(examples):
        length = example.input_ids.numel()
        rows = features[b, :length]
        aux = rows[:, width:].clone() if settings.aux_layers else None
        hidden = rows[:, :width].clone() if settings.store_hidden else None
        topk = None
        if settings.target_topk:
            topk = target_topk(target.lm_head, raw[b, :length, :width], settings.target_topk)
        out.append((hidden, aux, topk))
    return out


def _windows(items: Iterable[RenderedExample], size: int) -> Iterator[list[RenderedExample]]:
    window: list[RenderedExample] = []
    for item in items:
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


class ShardWriter:
    """Buffers samples and writes a shard whenever ``shard_tokens`` tokens are buffered.

    ``manifest`` (updated in place) is rewritten after each shard, as ``manifest.json`` or, for
    worker ``part``, ``manifest-partK.json``; ``counts`` [V] holds the loss-masked token
    frequencies of everything stored, old and new (``argmax_counts`` [V] those of the target's
    argmax, when the shards store its top-K distribution).
    """

    def __init__(
        self, manifest: Manifest, part: int | None = None, shard_tokens: int = 32768
    ) -> None:
        self.directory = manifest.directory
        self.manifest = manifest
        self.part = part
        self.shard_tokens = shard_tokens
        self.buffer: list[StoredSample] = []
        self.buffered_tokens = 0
        files, vocab_size = manifest.shard_files, manifest.target.vocab_size
        self.counts = counts_from_shards(self.directory, files, vocab_size)
        self.argmax_counts = argmax_counts_from_shards(self.directory, files, vocab_size)

    def add(self, sample: StoredSample) -> None:
        self.buffer.append(sample)
        self.buffered_tokens += sample.input_ids.numel()
        if self.buffered_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        """Write the buffered samples as one shard and update the manifest (no-op if empty)."""
        if not self.buffer:
            return
        tensors = pack_samples(self.buffer)
        name = shard_name(len(self.manifest.shards), self.part)
        entry = write_shard(self.directory, name, tensors, [s.id for s in self.buffer])
        self.counts += count_tokens(tensors["input_ids"], tensors["loss_mask"], len(self.counts))
        if "topk_ids" in tensors:
            argmax = tensors["topk_ids"][:, 0]
            new = count_argmax(argmax, tensors["loss_mask"], tensors["offsets"], len(self.counts))
            self.argmax_counts = new if self.argmax_counts is None else self.argmax_counts + new
        self.manifest.shards.append(entry)
        write_manifest(self.manifest, part_manifest_name(self.part))
        self.buffer, self.buffered_tokens = [], 0


@dataclass
class CaptureStats:
    samples: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def capture_to_shards(
    target: Any,
    examples: Iterable[RenderedExample],
    writer: ShardWriter,
    settings: CaptureSettings,
    progress: Any | None = None,
) -> CaptureStats:
    """Capture features of every example and store them through ``writer`` in input order.

    ``progress`` (optional, a tqdm bar) advances by one per sample and shows tokens/s.
    """
    stats = CaptureStats()
    start = time.perf_counter()
    for window in _windows(examples, settings.batch_size * 4):
        features: dict[int, tuple[Tensor | None, Tensor | None, TopK | None]] = {}
        lengths = [e.input_ids.numel() for e in window]
        batches = bucket_by_length(
            range(len(window)), lengths, settings.batch_size, settings.batch_tokens
        )
        for batch in batches:
            captured = capture_batch(target, [window[i] for i in batch], settings)
            for i, feature in zip(batch, captured, strict=True):
                features[i] = feature
            stats.samples += len(batch)
            stats.tokens += sum(lengths[i] for i in batch)
            stats.seconds = time.perf_counter() - start
            if progress is not None:
                progress.update(len(batch))
                progress.set_postfix(tok_s=f"{stats.tokens_per_second:.0f}", refresh=False)
        for i, example in enumerate(window):
            hidden, aux, topk = features[i]
            writer.add(
                StoredSample(example.id, example.input_ids, example.loss_mask, hidden, aux, topk)
            )
    writer.flush()
    stats.seconds = time.perf_counter() - start
    return stats
