"""Feature capture: rendered samples through the target, into resumable safetensors shards.

Owns the batching of samples for the target's forward, the split of its output into the EAGLE-1
feature (``hidden``: the post-norm last state) and the EAGLE-3 features (``aux``: three layers
concatenated, low/mid/high), and the shard writer.

A shard (``shard-NNNNN.safetensors``, or ``shard-partK-NNNNN`` for worker K) holds the samples
concatenated along the token axis: ``input_ids`` int32 [T], ``loss_mask`` uint8 [T],
``offsets`` int64 [n+1] (sample i is rows ``offsets[i]:offsets[i+1]``), ``hidden`` [T, H] and,
with EAGLE-3 features, ``aux`` [T, 3H], in bf16 or fp16. Its metadata lists the sample ids.
With ``target_topk`` K > 0 it also holds the target's next-token distribution at every
position, cut to its K most likely tokens: ``topk_ids`` int32 [T, K] (most likely first) and
``topk_probs`` fp16 [T, K] (full-vocabulary softmax probabilities, not renormalised); an
EAGLE-3-only capture then leaves ``hidden`` out, since training needs it only to recompute
that distribution.

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

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from eagle.ge_data.batching import bucket_by_length, pad_rows
from eagle.ge_data.manifest import write_manifest
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


@dataclass(frozen=True)
class TopK:
    ids: Tensor  # [L, K] int32, most likely first
    probs: Tensor  # [L, K] float16


@dataclass(frozen=True)
class StoredSample:
    id: str
    input_ids: Tensor  # [L] int32
    loss_mask: Tensor  # [L] uint8
    hidden: Tensor | None  # [L, H] storage dtype, or None when not stored
    aux: Tensor | None  # [L, 3H] storage dtype, or None without EAGLE-3 features
    topk: TopK | None = None  # the target's top-K distribution, or None


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

    ``manifest`` (a dict, updated in place) is rewritten at ``manifest_path`` after each shard;
    ``counts`` [V] holds the loss-masked token frequencies of everything stored, old and new.
    """

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        manifest_path: Path,
        prefix: str = "shard-",
        shard_tokens: int = 32768,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.prefix = prefix
        self.shard_tokens = shard_tokens
        self.buffer: list[StoredSample] = []
        self.buffered_tokens = 0
        files = [s["file"] for s in manifest["shards"]]
        vocab_size = manifest["target"]["vocab_size"]
        self.counts = counts_from_shards(directory, files, vocab_size)
        self.argmax_counts = argmax_counts_from_shards(directory, files, vocab_size)

    def add(self, sample: StoredSample) -> None:
        self.buffer.append(sample)
        self.buffered_tokens += sample.input_ids.numel()
        if self.buffered_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        """Write the buffered samples as one shard and update the manifest (no-op if empty)."""
        if not self.buffer:
            return
        name = f"{self.prefix}{len(self.manifest['shards']):05d}.safetensors"
        tensors = pack_samples(self.buffer)
        metadata = {"ids": json.dumps([s.id for s in self.buffer])}
        temporary = self.directory / (name + ".tmp")
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, self.directory / name)
        tokens, loss_tokens = tensors["input_ids"].numel(), int(tensors["loss_mask"].sum())
        self.counts += count_tokens(tensors["input_ids"], tensors["loss_mask"], len(self.counts))
        if "topk_ids" in tensors:
            argmax = tensors["topk_ids"][:, 0]
            new = count_argmax(argmax, tensors["loss_mask"], tensors["offsets"], len(self.counts))
            self.argmax_counts = new if self.argmax_counts is None else self.argmax_counts + new
        entry = {"file": name, "samples": len(self.buffer), "tokens": tokens}
        self.manifest["shards"].append({**entry, "loss_tokens": loss_tokens})
        self.manifest["num_samples"] += len(self.buffer)
        self.manifest["num_tokens"] += tokens
        self.manifest["num_loss_tokens"] += loss_tokens
        write_manifest(self.manifest_path, self.manifest)
        self.buffer, self.buffered_tokens = [], 0


def pack_samples(samples: Sequence[StoredSample]) -> dict[str, Tensor]:
    """Concatenate samples into the shard tensors (see the module docstring)."""
    lengths = torch.tensor([0] + [s.input_ids.numel() for s in samples], dtype=torch.long)
    tensors = {
        "input_ids": torch.cat([s.input_ids for s in samples]).to(torch.int32),
        "loss_mask": torch.cat([s.loss_mask for s in samples]).to(torch.uint8),
        "offsets": lengths.cumsum(0),
    }
    if samples[0].hidden is not None:
        tensors["hidden"] = torch.cat([s.hidden for s in samples]).contiguous()
    if samples[0].aux is not None:
        tensors["aux"] = torch.cat([s.aux for s in samples]).contiguous()
    if samples[0].topk is not None:
        tensors["topk_ids"] = torch.cat([s.topk.ids for s in samples]).contiguous()
        tensors["topk_probs"] = torch.cat([s.topk.probs for s in samples]).contiguous()
    return tensors


def stored_ids(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Ids of the samples in the manifest's shards, in storage order."""
    ids: list[str] = []
    for shard in manifest["shards"]:
        with safe_open(directory / shard["file"], "pt") as handle:
            listed = (handle.metadata() or {}).get("ids")
        if listed is None:
            raise ValueError(
                f"{directory / shard['file']} does not list its sample ids, so this run cannot "
                "resume it; write to another --outdir"
            )
        ids.extend(json.loads(listed))
    return ids


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
