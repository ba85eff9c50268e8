"""The EAGLE-3 draft vocabulary: token frequencies of the training data and the d2t / t2d maps.

Computes what ``DATA/vocab.safetensors`` holds (the file itself is read and written by
``eagle.ge_data.feature_format``, as a ``Vocabulary``):

- ``counts`` [V]: how often each target token id occurs at loss-masked positions (the
  assistant tokens, which are what the head learns to predict);
- ``argmax_counts`` [V] (when the shards store the target's top-k distribution): how often
  each id is the *target's argmax* for a loss-masked next token, i.e. what greedy verification
  accepts. The draft vocabulary is then counted on these, not on the data tokens (the data of a
  chat dataset is not the target's own text: ``\n\n`` is rare in ShareGPT answers and frequent
  in the target's);
- ``d2t`` [Vd] and ``t2d`` [V]: the draft vocabulary, i.e. the ``Vd`` most frequent target ids
  sorted by id, as an offset table (target id of draft id i = ``i + d2t[i]``) and a membership
  mask.

Design choices:
- Ties in frequency go to the lower token id, so the maps are a pure function of the counts.
- The counts are always recomputable from the shards (``counts_from_shards``): a resumed or
  multi-process run rebuilds them from what is stored instead of trusting a partial tally.
- ``python -m eagle.ge_data.vocab --outdir DATA --draft-vocab-size N`` rewrites the file for
  another draft size without touching the features.
- A shard that cannot be read (missing, truncated, corrupt, a token id outside the vocabulary)
  is a ValueError naming the shard (``feature_format.open_shard``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from eagle.ge_data.feature_format import Vocabulary, open_shard, read_manifest, write_vocab
from eagle.input_checks import POSITIVE_INT, check_flags


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


def build_vocab(
    counts: Tensor, draft_vocab_size: int, fingerprint: str, argmax_counts: Tensor | None = None
) -> Vocabulary:
    """The vocabulary file's content; ``draft_vocab_size`` is clipped to V.

    The draft vocabulary is ranked on ``argmax_counts`` when given, else on ``counts``.
    """
    size = min(draft_vocab_size, int(counts.shape[0]))
    d2t, t2d = draft_vocab_from_counts(counts if argmax_counts is None else argmax_counts, size)
    return Vocabulary(counts.long(), d2t, t2d, fingerprint, argmax_counts)


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
    try:
        manifest = read_manifest(args.outdir)
        vocab_size = manifest.target.vocab_size
        counts = counts_from_shards(args.outdir, manifest.shard_files, vocab_size)
        argmax = argmax_counts_from_shards(args.outdir, manifest.shard_files, vocab_size)
    except ValueError as error:
        parser.error(str(error))
    vocab = build_vocab(counts, args.draft_vocab_size, manifest.target.fingerprint, argmax)
    path = write_vocab(args.outdir, vocab)
    print(f"wrote {path} ({int(counts.sum())} loss tokens counted)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
