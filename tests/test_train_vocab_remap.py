"""Moving a trained EAGLE-3 head onto another draft vocabulary (``eagle.train.vocab_remap``)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_target, random_head

from eagle.ge_data.vocab import draft_vocab_from_counts
from eagle.model.checkpoint import load_head, save_head
from eagle.model.draft_head import TargetParts
from eagle.train.vocab_remap import draft_target_ids, remap_head, remap_lm_head


def _maps(ids: list[int], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.zeros(vocab_size, dtype=torch.long)
    counts[torch.tensor(ids)] = 1
    return draft_vocab_from_counts(counts, len(ids))


def test_shared_rows_are_kept_and_new_rows_follow_a_linear_relation_exactly():
    torch.manual_seed(0)
    vocab, width, head_width, size = 400, 8, 6, 120
    target_rows = torch.randn(vocab, width)
    relation = torch.randn(width, head_width)
    # trained rows that are an exact linear function of the target's rows: the fitted map must
    # recover it, so a new token's row is what the relation gives (up to the ridge)
    old_ids = torch.randperm(vocab)[:size].sort().values
    new_ids = torch.cat(
        [old_ids[20:], torch.tensor([i for i in range(vocab) if i not in old_ids][:20])]
    )
    old_d2t, _ = _maps(old_ids.tolist(), vocab)
    new_d2t, _ = _maps(new_ids.tolist(), vocab)
    lm_head = target_rows[draft_target_ids(old_d2t)] @ relation
    rows, fresh = remap_lm_head(lm_head, old_d2t, new_d2t, target_rows)
    assert fresh == 20
    got_ids = draft_target_ids(new_d2t)
    was = {int(t): i for i, t in enumerate(draft_target_ids(old_d2t))}
    for i, t in enumerate(got_ids.tolist()):
        if t in was:
            assert torch.equal(rows[i], lm_head[was[t]]), t
        else:
            torch.testing.assert_close(rows[i], target_rows[t] @ relation, atol=2e-2, rtol=2e-2)


def test_too_few_shared_tokens_is_refused():
    vocab = 50
    target_rows = torch.randn(vocab, 8)
    old_d2t, _ = _maps(list(range(10)), vocab)
    new_d2t, _ = _maps(list(range(5, 15)), vocab)
    with pytest.raises(ValueError, match="share 5 tokens, fewer than the target width 8"):
        remap_lm_head(torch.randn(10, 8), old_d2t, new_d2t, target_rows)


def test_remapped_head_loads_strictly_and_scores_kept_tokens_as_before(tmp_path):
    target = make_target("llama")
    parts = TargetParts(target.embed_tokens, target.lm_head)
    head = random_head(target, "eagle3", seed=3, draft_vocab=64)
    save_head(head, tmp_path / "old")
    vocab = target.embed_tokens.weight.shape[0]
    old_ids = draft_target_ids(head.d2t)
    unused = [i for i in range(vocab) if i not in set(old_ids.tolist())]
    new_d2t, new_t2d = _maps(old_ids[8:].tolist() + unused[:8], vocab)
    fresh = remap_head(tmp_path / "old", tmp_path / "new", new_d2t, new_t2d, target.lm_head.weight)
    assert fresh == 8
    moved = load_head(tmp_path / "new", parts, dtype=torch.float32)
    assert torch.equal(moved.d2t, new_d2t) and torch.equal(moved.t2d, new_t2d)
    hidden = torch.randn(5, head.lm_head.weight.shape[1])
    before, after = head.lm_head(hidden), moved.lm_head(hidden)
    new_ids = draft_target_ids(new_d2t).tolist()
    for j, t in enumerate(old_ids.tolist()[8:]):
        torch.testing.assert_close(after[:, new_ids.index(t)], before[:, 8 + j])
    # everything but the output layer and the maps is untouched
    for key, value in head.state_dict().items():
        if key not in ("lm_head.weight", "d2t", "t2d"):
            assert torch.equal(moved.state_dict()[key], value), key


def test_maps_that_disagree_are_refused(tmp_path):
    target = make_target("llama")
    head = random_head(target, "eagle3", seed=3, draft_vocab=64)
    save_head(head, tmp_path / "old")
    t2d = head.t2d.clone()
    t2d[int(draft_target_ids(head.d2t)[0])] = False
    t2d[int((~head.t2d).nonzero()[0])] = True
    with pytest.raises(ValueError, match="disagree"):
        remap_head(tmp_path / "old", tmp_path / "new", head.d2t, t2d, target.lm_head.weight)
