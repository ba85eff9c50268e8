"""Reading generated features for training: samples, split, batches, padding.

The folder (``DATA/manifest.json``, the shards, ``DATA/vocab.safetensors``) is read through
``eagle.ge_data.feature_format``, the same module that writes it; this module turns its
samples into training batches.

Design choices:
- Data made for another model is refused: the target given for training must have the data's
  shapes and fingerprint (``feature_format.check_target``), and the vocabulary file must carry
  the manifest's fingerprint (``feature_format.read_vocab``).
- Shards are opened lazily with ``safe_open`` (memory-mapped) and a sample is read as slices,
  so memory does not grow with the data set; open handles are dropped when the dataset is
  pickled for DataLoader workers.
- The train/validation split is by sample, from a seeded permutation: deterministic for a given
  seed and sample count, independent of batch size and process count.
- Batches are planned up front per epoch (seed + epoch), from samples sorted by length within
  windows so padding stays small (``eagle.ge_data.batching.bucket_by_length``, as capture
  does), capped by samples and optionally by padded tokens. Each process takes every
  ``world``-th batch; training batches are trimmed so every process runs the same number of
  full gradient-accumulation groups. A resumed run re-plans the same epoch and skips the
  batches already done.
- ``collate`` right-pads to the batch's longest sample plus ``extra`` columns, so the unrolled
  loss can slice ``token_{t+1+s}`` for every step s without bounds checks (pads are masked).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from eagle.ge_data.batching import bucket_by_length, pad_rows
from eagle.ge_data.feature_format import (
    VOCAB_FILE,
    DataFormatError,
    Manifest,
    Vocabulary,
    shard_offsets,
)
from eagle.ge_data.vocab import draft_vocab_from_counts


class FeatureDataset(Dataset):
    """Samples of the shards of one data folder or of several (in the order given), truncated to
    ``max_len`` tokens. Several folders must store the same features (``check_same_features``).

    Item i: ``input_ids`` [L] long, ``loss_mask`` [L] bool, and (features in the stored dtype)
    ``hidden`` [L, H] unless the stored top-K distribution replaces it, ``aux`` [L, 3H] with
    ``with_aux``, ``topk_ids`` [L, K] long and ``topk_probs`` [L, K] when the data stores them
    and ``with_hidden`` is False (EAGLE-3: the distribution is all the loss needs of the
    target).
    """

    def __init__(
        self,
        manifest: Manifest | Sequence[Manifest],
        max_len: int,
        with_aux: bool,
        with_hidden: bool | None = None,
    ) -> None:
        manifests = [manifest] if isinstance(manifest, Manifest) else list(manifest)
        if not manifests:
            raise DataFormatError("no data folder given")
        first = manifests[0]
        for other in manifests[1:]:
            check_same_features(first, other)
        if with_aux and first.aux_layers is None:
            raise DataFormatError(
                f"{first.directory} has no EAGLE-3 features (feature_layers.aux); generate "
                "the data with the EAGLE-3 layers to train an EAGLE-3 head"
            )
        if with_hidden is None:  # EAGLE-3 uses the stored distribution when there is one
            with_hidden = not (with_aux and first.target_topk)
        if with_hidden and not first.has_hidden:
            raise DataFormatError(
                f"{first.directory} stores no last hidden state (captured with --target-topk "
                "for EAGLE-3 only); an EAGLE-1 head needs it: capture with --variants eagle1"
            )
        self.with_aux = with_aux
        self.with_hidden = with_hidden
        self.with_topk = not with_hidden
        self.paths: list[Path] = []
        self.refs: list[tuple[int, int, int]] = []  # (shard, start, end) per sample
        for m in manifests:
            if not m.shards:
                raise DataFormatError(f"{m.directory} lists no shards (no sample stored yet)")
            for name in m.shard_files:
                offsets = shard_offsets(m.directory, name)
                for start, end in itertools.pairwise(offsets):
                    self.refs.append((len(self.paths), start, min(end, start + max_len)))
                self.paths.append(m.directory / name)
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def lengths(self) -> list[int]:
        return [end - start for _, start, end in self.refs]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        shard, start, end = self.refs[index]
        f = self._handle(shard)
        item = {
            "input_ids": f.get_slice("input_ids")[start:end].long(),
            "loss_mask": f.get_slice("loss_mask")[start:end].bool(),
        }
        if self.with_hidden:
            item["hidden"] = f.get_slice("hidden")[start:end]
        else:
            item["topk_ids"] = f.get_slice("topk_ids")[start:end].long()
            item["topk_probs"] = f.get_slice("topk_probs")[start:end]
        if self.with_aux:
            item["aux"] = f.get_slice("aux")[start:end]
        return item

    def _handle(self, shard: int) -> Any:
        if shard not in self._handles:
            self._handles[shard] = safe_open(self.paths[shard], "pt")
        return self._handles[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not pickle; workers reopen lazily
        return state


def check_same_features(first: Manifest, other: Manifest) -> None:
    """Refuse to train on two folders as one set unless they store the same things for the same
    target: feature layers, storage dtype and stored target distribution."""
    for what, a, b in (
        ("target", first.target.fingerprint, other.target.fingerprint),
        ("feature layers", first.feature_layers, other.feature_layers),
        ("feature dtype", first.dtype, other.dtype),
        ("target_topk", first.target_topk, other.target_topk),
    ):
        if a != b:
            raise DataFormatError(
                f"{other.directory} and {first.directory} differ in {what} ({b} against {a}): "
                "data folders trained on together must be captured with the same settings"
            )


def merge_vocabs(vocabs: Sequence[Vocabulary | None]) -> Vocabulary | None:
    """The vocabulary of several folders' data as one set: counts summed and the draft
    vocabulary (the size of the first's) ranked again on them, as ``draft_vocab`` ranks it.

    One vocabulary is returned as it is; None when any folder has none."""
    if len(vocabs) == 1:
        return vocabs[0]
    present = [v for v in vocabs if v is not None]
    if len(present) < len(vocabs):
        return None
    first = present[0]
    if any(v.fingerprint != first.fingerprint for v in present):
        raise DataFormatError("the data folders' vocabularies were made for different targets")
    counts = torch.stack([v.counts for v in present]).sum(0)
    argmax = None
    if all(v.argmax_counts is not None for v in present):
        argmax = torch.stack([v.argmax_counts for v in present if v.argmax_counts is not None])
        argmax = argmax.sum(0)
    ranked_on = counts if argmax is None else argmax
    d2t, t2d = draft_vocab_from_counts(ranked_on, int(first.d2t.shape[0]))
    return Vocabulary(counts, d2t, t2d, first.fingerprint, argmax)


def split_samples(num: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, validation) sample indices; at least one of each when possible."""
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed)).tolist()
    held = round(num * val_fraction)
    if val_fraction > 0 and num >= 2:
        held = min(max(held, 1), num - 1)
    return sorted(order[held:]), sorted(order[:held])


def plan_batches(
    lengths: list[int],
    indices: list[int],
    batch_size: int,
    batch_tokens: int | None,
    seed: int,
    shuffle: bool,
) -> list[list[int]]:
    """Group sample indices into batches of similar length.

    A batch holds at most ``batch_size`` samples and, with ``batch_tokens``, at most that many
    padded tokens (a single longer sample still forms a batch on its own).
    """
    generator = torch.Generator().manual_seed(seed)
    order = list(indices)
    if shuffle:
        order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
    window = 64 * batch_size
    batches: list[list[int]] = []
    for w in range(0, len(order), window):
        batches += bucket_by_length(order[w : w + window], lengths, batch_size, batch_tokens)
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def shard_batches(
    batches: list[list[int]], rank: int, world: int, group: int = 1
) -> list[list[int]]:
    """This process's batches: every ``world``-th one, trimmed to whole groups of ``group``.

    With ``group`` = gradient-accumulation steps every process gets the same number of full
    accumulation groups (distributed training needs equal step counts).
    """
    per_process = len(batches) // world // group * group
    return batches[rank::world][:per_process]


def collate(samples: list[dict[str, Tensor]], extra: int) -> dict[str, Tensor]:
    """Right-pad a list of items to the longest one (+ ``extra`` columns for the token/target
    shifts of the unrolled steps).

    Returns ``input_ids`` [B, W] long, ``loss_mask`` [B, W] bool, ``lengths`` [B], and the
    items' ``hidden`` [B, W, H] or ``topk_ids`` / ``topk_probs`` [B, W, K], and ``aux``
    [B, L, 3H] when they have it, with L the longest sample and W = L + extra. Pads are 0 /
    False.
    """
    lengths = torch.tensor([s["input_ids"].shape[0] for s in samples])
    longest = int(lengths.max())
    width = longest + extra
    batch = {
        "input_ids": pad_rows([s["input_ids"] for s in samples], width),
        "loss_mask": pad_rows([s["loss_mask"] for s in samples], width),
        "lengths": lengths,
    }
    for name in ("hidden", "topk_ids", "topk_probs"):
        if name in samples[0]:
            batch[name] = pad_rows([s[name] for s in samples], width)
    if "aux" in samples[0]:
        batch["aux"] = pad_rows([s["aux"] for s in samples], longest)
    return batch


def draft_vocab(vocab: Vocabulary | None, size: int, vocab_size: int) -> tuple[Tensor, Tensor]:
    """(d2t [size], t2d [V]) for a draft vocabulary of ``size`` tokens.

    The data's stored maps are used when their size matches; otherwise the maps are recomputed
    from the data's counts (of the target's argmax when stored, else of the data tokens) with
    ``eagle.ge_data.vocab.draft_vocab_from_counts``.
    """
    if size == vocab_size:
        return torch.zeros(size, dtype=torch.long), torch.ones(vocab_size, dtype=torch.bool)
    if vocab is None:
        raise DataFormatError(
            f"a reduced draft vocabulary ({size} of {vocab_size}) needs the data's {VOCAB_FILE}"
        )
    if vocab.d2t.shape[0] == size:
        return vocab.d2t.long(), vocab.t2d.bool()
    ranked_on = vocab.counts if vocab.argmax_counts is None else vocab.argmax_counts
    return draft_vocab_from_counts(ranked_on, size)
