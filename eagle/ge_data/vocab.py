"""The EAGLE-3 draft vocabulary: token frequencies of the training data and the d2t / t2d maps.

Owns ``DATA/vocab.safetensors``:

- ``counts`` int64 [V]: how often each target token id occurs at loss-masked positions (the
  assistant tokens, which are what the head learns to predict);
- ``argmax_counts`` int64 [V] (when the shards store the target's top-k distribution): how
  often each id is the *target's argmax* for a loss-masked next token, i.e. what greedy
  verification accepts. The draft vocabulary is then counted on these, not on the data tokens
  (the data of a chat dataset is not the target's own text: ``\n\n`` is rare in ShareGPT
  answers and frequent in the target's);
- ``d2t`` int64 [Vd] and ``t2d`` bool [V]: the draft vocabulary, i.e. the ``Vd`` most frequent
  target ids sorted by id, as an offset table (target id of draft id i = ``i + d2t[i]``) and a
  membership mask;
- metadata (strings): the target fingerprint, ``draft_vocab_size`` and ``vocab_size``, so a
  vocabulary made for one model is never silently reused for another.

Design choices:
- Ties in frequency go to the lower token id, so the maps are a pure function of the counts.
- The counts are always recomputable from the shards (``counts_from_shards``): a resumed or
  multi-process run rebuilds them from what is stored instead of trusting a partial tally.
- ``python -m eagle.ge_data.vocab --outdir DATA --draft-vocab-size N`` rewrites the file for
  another draft size without touching the features.
- A shard that cannot be read (missing, truncated, corrupt, a token id outside the vocabulary)
  is a ValueError naming the shard (``open_shard``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from eagle.input_checks import POSITIVE_INT, check_flags

VOCAB_FILE = "vocab.safetensors"


def count_tokens(input_ids: Tensor, loss_mask: Tensor, vocab_size: int) -> Tensor:
    """Frequency of each id at masked positions: input_ids [T], loss_mask [T] -> int64 [V]."""
    masked = input_ids[loss_mask.bool()].long()
    if masked.numel() and int(masked.max()) >= vocab_size:
        raise ValueError(f"token id {int(masked.max())} is outside the vocabulary ({vocab_size})")
    return torch.bincount(masked, minlength=vocab_size)


def count_argmax(argmax: Tensor, loss_mask: Tensor, offsets: Tensor, vocab_size: int) -> Tensor:
    """Frequency of the target's argmax where the next token is an assistant token.

    argmax [T] (the target's most likely next token at each position), loss_mask [T], offsets
    [n+1] of the samples concatenated in a shard -> int64 [V]. Position j counts when
    ``loss_mask[j + 1]`` holds and j + 1 lies in the same sample.
    """
    counted = torch.zeros_like(loss_mask, dtype=torch.bool)
    counted[:-1] = loss_mask[1:].bool()
    ends = offsets[1:].long() - 1  # the last position of each sample predicts nothing stored
    counted[ends[ends >= 0]] = False
    return count_tokens(argmax, counted.to(torch.uint8), vocab_size)


def draft_vocab_from_counts(counts: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """The ``size`` most frequent ids (ties: lower id first), sorted by id, as EAGLE-3 maps.

    counts [V] -> (d2t int64 [size] with target id = i + d2t[i], t2d bool [V]).
    Raises ValueError unless 1 <= size <= V.
    """
    vocab_size = int(counts.shape[0])
    if not 1 <= size <= vocab_size:
        raise ValueError(f"draft vocabulary size must be in 1..{vocab_size}, got {size}")
    ranked = torch.sort(-counts.long(), stable=True).indices  # count desc, id asc on ties
    kept = ranked[:size].sort().values
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[kept] = True
    return kept - torch.arange(size), t2d


@contextmanager
def open_shard(directory: str | Path, name: str) -> Iterator[Any]:
    """``safe_open`` of one shard; whatever fails while reading it (a missing, truncated or
    corrupt file, a missing tensor, a token id outside the vocabulary) is a ValueError that
    names the shard."""
    path = Path(directory) / name
    try:
        with safe_open(path, "pt") as shard:
            yield shard
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"shard {path}: {error}; delete it and its manifest entry, then rerun eagle.ge_data "
            "to capture it again"
        ) from error


def counts_from_shards(
    directory: str | Path, shard_files: Iterable[str], vocab_size: int
) -> Tensor:
    """Recount the loss-masked token frequencies [V] from stored shards (ids and mask only)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for name in shard_files:
        with open_shard(directory, name) as shard:
            ids, mask = shard.get_tensor("input_ids"), shard.get_tensor("loss_mask")
            counts += count_tokens(ids, mask, vocab_size)
    return counts


def argmax_counts_from_shards(
    directory: str | Path, shard_files: Iterable[str], vocab_size: int
) -> Tensor | None:
    """Recount the target-argmax frequencies [V] from shards that store ``topk_ids`` (None when
    there are no shards or any of them does not)."""
    counts = None
    for name in shard_files:
        with open_shard(directory, name) as shard:
            if "topk_ids" not in set(shard.keys()):
                return None
            if counts is None:
                counts = torch.zeros(vocab_size, dtype=torch.long)
            argmax = shard.get_slice("topk_ids")[:, 0:1][:, 0]
            mask, offsets = shard.get_tensor("loss_mask"), shard.get_tensor("offsets")
            counts += count_argmax(argmax, mask, offsets, vocab_size)
    return counts


def write_vocab(
    directory: str | Path,
    counts: Tensor,
    draft_vocab_size: int,
    fingerprint: str,
    argmax_counts: Tensor | None = None,
) -> Path:
    """Write ``vocab.safetensors`` atomically; ``draft_vocab_size`` is clipped to V.

    The draft vocabulary is counted on ``argmax_counts`` when given, else on ``counts``.
    """
    size = min(draft_vocab_size, int(counts.shape[0]))
    ranked_on = counts if argmax_counts is None else argmax_counts
    d2t, t2d = draft_vocab_from_counts(ranked_on, size)
    path = Path(directory) / VOCAB_FILE
    temporary = path.with_name(path.name + ".tmp")
    metadata = {
        "fingerprint": fingerprint,
        "draft_vocab_size": str(size),
        "vocab_size": str(int(counts.shape[0])),
        "counted_on": "data_tokens" if argmax_counts is None else "target_argmax",
    }
    tensors = {"counts": counts.long(), "d2t": d2t, "t2d": t2d}
    if argmax_counts is not None:
        tensors["argmax_counts"] = argmax_counts.long()
    save_file(tensors, temporary, metadata=metadata)
    os.replace(temporary, path)
    return path


def read_vocab(directory: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors (counts, d2t, t2d) and metadata of ``DATA/vocab.safetensors``."""
    path = Path(directory) / VOCAB_FILE
    with safe_open(path, "pt") as handle:
        metadata = dict(handle.metadata() or {})
    return load_file(path), metadata


def main(argv: list[str] | None = None) -> int:
    """Rebuild DATA/vocab.safetensors from the stored shards, e.g. for another draft size."""
    parser = argparse.ArgumentParser(prog="python -m eagle.ge_data.vocab", description=main.__doc__)
    parser.add_argument("--outdir", required=True, help="data folder written by eagle.ge_data")
    parser.add_argument(
        "--draft-vocab-size",
        type=int,
        default=32000,
        help="draft vocabulary size (clipped to the target vocabulary; default 32000)",
    )
    args = parser.parse_args(argv)
    check_flags(parser, args, {"--draft-vocab-size": POSITIVE_INT})
    manifest_path = Path(args.outdir) / "manifest.json"
    if not manifest_path.is_file():
        parser.error(f"--outdir {args.outdir} has no manifest.json (run eagle.ge_data first)")
    try:
        shards, vocab_size, fingerprint = _manifest_entries(manifest_path)
        counts = counts_from_shards(args.outdir, shards, vocab_size)
        argmax = argmax_counts_from_shards(args.outdir, shards, vocab_size)
    except ValueError as error:
        parser.error(str(error))
    path = write_vocab(args.outdir, counts, args.draft_vocab_size, fingerprint, argmax)
    print(f"wrote {path} ({int(counts.sum())} loss tokens counted)")
    return 0


def _manifest_entries(path: Path) -> tuple[list[str], int, str]:
    """(shard files, target vocabulary size, target fingerprint) of a manifest; ValueError
    naming the file when it is not one."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        shards = [str(s["file"]) for s in manifest["shards"]]
        target = manifest["target"]
        vocab_size, fingerprint = int(target["vocab_size"]), str(target["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise ValueError(
            f"{path} is not a manifest written by eagle.ge_data ({error!r})"
        ) from error
    if vocab_size < 1:
        raise ValueError(f"{path}: target vocab_size must be >= 1, got {vocab_size}")
    return shards, vocab_size, fingerprint


if __name__ == "__main__":
    raise SystemExit(main())
