"""Length bucketing and padding, shared by capture, regeneration and training."""

from __future__ import annotations

import torch

from eagle.ge_data.batching import bucket_by_length, pad_rows


def test_buckets_are_longest_first_and_keep_the_given_order_on_ties():
    lengths = [4, 9, 4, 9, 1]
    assert bucket_by_length([2, 0, 4, 3, 1], lengths, 2, None) == [[3, 1], [2, 0], [4]]
    assert bucket_by_length(range(5), lengths, 5, 18) == [[1, 3], [0, 2, 4]]
    assert bucket_by_length(range(5), lengths, 5, 5) == [[1], [3], [0], [2], [4]]  # alone
    assert bucket_by_length([], lengths, 2, None) == []


def test_pad_rows_right_left_and_to_a_width():
    rows = [torch.tensor([1, 2, 3]), torch.tensor([4])]
    assert pad_rows(rows).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad_rows(rows, value=9, left=True).tolist() == [[1, 2, 3], [9, 9, 4]]
    assert pad_rows(rows, width=5).tolist() == [[1, 2, 3, 0, 0], [4, 0, 0, 0, 0]]
    features = [torch.ones(2, 3, dtype=torch.bfloat16), torch.ones(1, 3, dtype=torch.bfloat16)]
    padded = pad_rows(features)
    assert padded.shape == (2, 2, 3) and padded.dtype == torch.bfloat16
    assert padded[1, 1].tolist() == [0, 0, 0]
    assert pad_rows(
        [torch.tensor([5]), torch.tensor([], dtype=torch.long)], left=True
    ).tolist() == [
        [5],
        [0],
    ]
