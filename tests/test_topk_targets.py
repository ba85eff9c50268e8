"""The stored top-K target distribution (``--target-topk``): what capture writes, the draft
vocabulary counted on the target's argmax, the fixed validation split, and training on it (the
fast loss against the slow reference; with K = V it equals the lm_head path)."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import (
    VOCAB,
    greedy_samples,
    make_model,
    make_target,
    random_head,
    save_chat_target_dir,
    word_conversations,
    write_feature_data,
    write_jsonl,
)
from transformers import AutoModelForCausalLM

from eagle.ge_data.feature_format import open_shard, read_manifest, read_vocab
from eagle.ge_data.main import main as ge_data_main
from eagle.ge_data.sharegpt import VAL_BUCKETS, split_of
from eagle.ge_data.vocab import count_argmax
from eagle.train.build import CastInput
from eagle.train.data import FeatureDataset, collate
from eagle.train.loss import LossSpec, reference_loss, target_table, topk_table, unrolled_loss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("topk")
    save_chat_target_dir(make_model("llama"), root / "target")
    write_jsonl(root / "data.jsonl", word_conversations(8))
    return root


def _capture(files, outdir, *extra):
    argv = [
        "--base-model-path", str(files / "target"), "--data", str(files / "data.jsonl"),
        "--outdir", str(outdir), "--dtype", "float32", "--batch-size", "3",
        "--shard-tokens", "100", "--quiet", "--draft-vocab-size", "16", *extra,
    ]  # fmt: skip
    assert ge_data_main(argv) == 0


def _shards(outdir):
    for name in read_manifest(outdir).shard_files:
        with open_shard(outdir, name) as f:
            yield {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open)


def test_capture_stores_the_target_top_k_and_counts_its_argmax(files, tmp_path):
    _capture(files, tmp_path, "--variants", "eagle3", "--target-topk", "5")
    model = AutoModelForCausalLM.from_pretrained(files / "target", dtype=torch.float32)
    argmax_counts = torch.zeros(VOCAB, dtype=torch.long)
    for shard in _shards(tmp_path):
        assert "hidden" not in shard  # EAGLE-3 alone: the distribution replaces it
        assert shard["topk_ids"].dtype == torch.int32 and shard["topk_probs"].dtype == torch.float16
        offsets = shard["offsets"].tolist()
        for a, b in itertools.pairwise(offsets):
            with torch.no_grad():
                probs = model(shard["input_ids"][a:b].long()[None]).logits[0].softmax(-1)
            top = probs.topk(5)
            assert torch.equal(shard["topk_ids"][a:b].long(), top.indices)
            torch.testing.assert_close(
                shard["topk_probs"][a:b].float(), top.values, atol=1e-3, rtol=1e-2
            )
            # counted: position j whose next token j+1 (same sample) is an assistant token
            mask = shard["loss_mask"][a:b].bool()
            argmax_counts += torch.bincount(top.indices[:-1, 0][mask[1:]], minlength=VOCAB)
    manifest = read_manifest(tmp_path)
    vocab = read_vocab(manifest)
    assert vocab.counted_on == "target_argmax"
    assert torch.equal(vocab.argmax_counts, argmax_counts)
    kept = vocab.t2d.nonzero()[:, 0]
    outside = argmax_counts[~vocab.t2d]
    assert argmax_counts[kept].min() >= (outside.max() if outside.numel() else 0)
    assert manifest.target_topk == 5 and manifest.feature_layers.hidden == ()


def test_eagle1_keeps_the_hidden_state_with_top_k(files, tmp_path):
    _capture(files, tmp_path, "--variants", "eagle1,eagle3", "--target-topk", "3")
    shard = next(_shards(tmp_path))
    assert {"hidden", "aux", "topk_ids", "topk_probs"} <= shard.keys()


def test_resuming_with_another_k_names_the_flag(files, tmp_path, capsys):
    _capture(files, tmp_path, "--variants", "eagle3", "--target-topk", "3", "--limit", "2")
    argv = [
        "--base-model-path", str(files / "target"), "--data", str(files / "data.jsonl"),
        "--outdir", str(tmp_path), "--dtype", "float32", "--quiet", "--variants", "eagle3",
        "--target-topk", "4",
    ]  # fmt: skip
    assert ge_data_main(argv) == 2
    assert "--target-topk" in capsys.readouterr().err


def test_count_argmax_stops_at_sample_ends():
    argmax = torch.tensor([5, 6, 7, 8, 9])
    loss_mask = torch.tensor([0, 1, 1, 1, 1], dtype=torch.uint8)
    offsets = torch.tensor([0, 3, 5])  # samples [0, 3) and [3, 5)
    counts = count_argmax(argmax, loss_mask, offsets, 10)
    # j=0 (next 1), j=1 (next 2); j=2 ends its sample; j=3 (next 4); j=4 ends
    assert counts.nonzero()[:, 0].tolist() == [5, 6, 8]


def test_validation_split_is_fixed_by_the_source_chat():
    ids = [f"chat{i}" for i in range(4000)]
    val = [i for i in ids if split_of(i) == "val"]
    assert 0.5 / VAL_BUCKETS < len(val) / len(ids) < 2 / VAL_BUCKETS
    assert all(split_of(f"{i}_3") == split_of(i) for i in ids[:200])  # parts stay together
    assert [split_of(i) for i in ids] == [split_of(i) for i in ids]  # a pure function


def test_split_flag_selects_one_side(files, tmp_path, monkeypatch):
    import eagle.ge_data.sharegpt as sharegpt

    monkeypatch.setattr(sharegpt, "split_of", lambda cid: "val" if cid in ("c1", "c4") else "train")
    _capture(files, tmp_path / "val", "--variants", "eagle3", "--split", "val")
    _capture(files, tmp_path / "train", "--variants", "eagle3", "--split", "train")
    val, train = read_manifest(tmp_path / "val"), read_manifest(tmp_path / "train")
    assert val.num_samples == 2 and train.num_samples == 6
    assert val.source["split"] == "val"


# -- training on the stored distribution --------------------------------------------------------


@pytest.fixture(scope="module")
def target():
    return make_target("llama")


def _topk_data(target, directory, k):
    """Feature data whose shards also hold the target's top-k distribution."""
    samples = greedy_samples(target, 3, prompt_len=3, new_tokens=8, seed=5)
    return write_feature_data(
        target, directory, samples, draft_vocab_size=24, shard_samples=2, target_topk=k
    )


@pytest.mark.parametrize("draft_vocab", [24, None], ids=["reduced-vocab", "full-vocab"])
def test_fast_loss_on_top_k_matches_the_reference(target, tmp_path, draft_vocab):
    manifest = _topk_data(target, tmp_path, k=6)
    dataset = FeatureDataset(manifest, max_len=64, with_aux=True)
    assert dataset.with_topk
    head = random_head(target, "eagle3", seed=3, draft_vocab=draft_vocab)
    batch = collate([dataset[i] for i in range(len(dataset))], extra=4)
    assert "hidden" not in batch
    spec = LossSpec("eagle3", 3)
    results = []
    for loss_fn in (unrolled_loss, reference_loss):
        head.zero_grad()
        out = loss_fn(head, CastInput(target.lm_head), batch, batch["aux"].float(), spec)
        out.loss.backward()
        results.append(
            (out, {n: p.grad.clone() for n, p in head.named_parameters() if p.grad is not None})
        )
    (fast, fast_grads), (slow, slow_grads) = results
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-5, atol=1e-6)
    for name in spec.metrics:
        torch.testing.assert_close(fast.sums[name], slow.sums[name], rtol=1e-5, atol=1e-5)
    for name, grad in fast_grads.items():
        torch.testing.assert_close(grad, slow_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_top_k_of_the_whole_vocabulary_is_the_lm_head_table(target):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, target.hidden_size, generator=generator)
    loss_mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    vocab_ids = torch.tensor([0, 2, 3, 5, 8, 13, 21, 34])
    with torch.no_grad():
        probs = target.lm_head(hidden).softmax(-1)
    top = probs.topk(VOCAB)
    index = torch.full((VOCAB,), -1)
    index[vocab_ids] = torch.arange(len(vocab_ids))
    from_topk = topk_table(top.indices, top.values, loss_mask, index)
    from_lm_head = target_table(target.lm_head, hidden, loss_mask, vocab_ids)
    assert torch.equal(from_topk.row, from_lm_head.row)
    assert torch.equal(from_topk.best, from_lm_head.best)
    torch.testing.assert_close(from_topk.probs, from_lm_head.probs)
    assert bool(from_topk.usable[from_topk.row >= 0].all())


def test_rows_without_a_draft_token_are_not_usable():
    ids = torch.tensor([[[1, 2], [3, 4], [5, 6], [1, 9]]])  # [B=1, W=4, K=2]
    probs = torch.tensor([[[0.5, 0.2], [0.6, 0.1], [0.3, 0.3], [0.9, 0.05]]])
    loss_mask = torch.tensor([[0, 1, 1, 1]], dtype=torch.bool)
    index = torch.full((10,), -1)
    index[torch.tensor([2, 4])] = torch.tensor([0, 1])
    table = topk_table(ids, probs, loss_mask, index)
    # rows: positions 1 and 2 (position 0 is never read)
    assert table.row.tolist() == [[-1, 0, 1]]
    assert table.usable.tolist() == [[False, True, False]]  # position 2: ids 5, 6 both outside
    torch.testing.assert_close(table.probs[0], torch.tensor([0.0, 1.0]))
    assert table.best.tolist() == [3, 5]
