"""Batches of variable-length samples: length bucketing and padding.

The one place both sides of the feature data make batches: capture (``eagle.ge_data.capture``),
regeneration (``eagle.ge_data.regenerate``) and one-pass answering (``eagle.ge_data.onpolicy``)
before the target's forward, training and validation (``eagle.train.data``) when reading the
shards back.

Design choices:
- A batch's cost is its padded size, (number of samples) x (longest length), so samples are
  sorted by decreasing length before being cut: neighbours have similar lengths and padding
  stays small. The sort is stable (ties keep the given order), so a plan is a pure function of
  its inputs.
- A sample longer than the token cap still forms a batch on its own; nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor


def bucket_by_length(
    indices: Iterable[int], lengths: Sequence[int], batch_size: int, batch_tokens: int | None
) -> list[list[int]]:
    """Cut ``indices`` into batches of similar length, longest first.

    lengths[i] is sample i's length. A batch holds at most ``batch_size`` samples and, with
    ``batch_tokens``, at most that many padded tokens (count x its first, longest sample).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(indices, key=lambda i: -lengths[i]):
        if current:
            padded = (len(current) + 1) * lengths[current[0]]  # the batch's cost with i added
            if len(current) == batch_size or (batch_tokens is not None and padded > batch_tokens):
                batches.append(current)
                current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_rows(
    rows: Sequence[Tensor], width: int | None = None, value: float = 0, left: bool = False
) -> Tensor:
    """Stack rows [L_b, *] into [B, W, *] filled with ``value`` elsewhere.

    W is ``width`` (at least the longest row) or the longest L_b. Rows start at column 0, or
    end at column W with ``left`` (prompts for generation).
    """
    width = max(int(row.shape[0]) for row in rows) if width is None else width
    out = rows[0].new_full((len(rows), width, *rows[0].shape[1:]), value)
    for b, row in enumerate(rows):
        length = int(row.shape[0])
        if left:
            out[b, width - length :] = row
        else:
            out[b, :length] = row
    return out
