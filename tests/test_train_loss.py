"""The fast unrolled loss against the slow reference loop: values, counters and gradients."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import greedy_samples, head_config, make_target, random_head, write_feature_data

from eagle.ge_data.feature_format import read_manifest
from eagle.model.draft_head import build_head
from eagle.train.build import CastInput, target_parts
from eagle.train.data import FeatureDataset, collate
from eagle.train.loss import (
    HeadObjective,
    LossSpec,
    SoftCrossEntropy,
    chain_mask,
    reference_loss,
    target_table,
    unrolled_loss,
)


@functools.cache
def _target():
    return make_target("llama")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    target = _target()
    samples = greedy_samples(target, 3, prompt_len=3, new_tokens=8, seed=5)
    ids, mask = samples[1]
    mask = mask.clone()
    mask[6] = 0  # a hole in the loss mask
    samples[1] = (ids[:9], mask[:9])  # and a shorter sample
    directory = tmp_path_factory.mktemp("loss-data")
    write_feature_data(target, directory, samples, draft_vocab_size=64, shard_samples=2)
    return FeatureDataset(read_manifest(directory), max_len=64, with_aux=True)


def _head(variant: str, draft_vocab: int | None, layers: int):
    target = _target()
    if layers == 1:
        return random_head(target, variant, seed=3, draft_vocab=draft_vocab)
    torch.manual_seed(3)
    parts = target_parts(target.embed_tokens, target.lm_head)
    return build_head(head_config(variant, num_hidden_layers=layers), parts, False)


def _run(loss_fn, head, batch, spec):
    head.zero_grad()
    features = (batch["aux"] if spec.variant == "eagle3" else batch["hidden"]).float()
    out = loss_fn(head, CastInput(_target().lm_head), batch, features, spec)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in head.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize(
    ("variant", "draft_vocab", "layers", "steps"),
    [("eagle1", None, 1, 3), ("eagle1", None, 2, 2), ("eagle3", 64, 1, 3), ("eagle3", None, 1, 2)],
    ids=["eagle1", "eagle1-2layers", "eagle3-reduced-vocab", "eagle3-full-vocab"],
)
def test_fast_loss_matches_the_reference_loop(dataset, variant, draft_vocab, layers, steps):
    head = _head(variant, draft_vocab, layers)
    batch = collate([dataset[i] for i in range(len(dataset))], extra=steps + 1)
    spec = LossSpec(variant, steps, step_weight=0.8, feature_weight=1.0, token_weight=0.1)
    fast, fast_grads = _run(unrolled_loss, head, batch, spec)
    slow, slow_grads = _run(reference_loss, head, batch, spec)
    torch.testing.assert_close(fast.loss, slow.loss, rtol=1e-5, atol=1e-6)
    assert fast.sums.keys() == slow.sums.keys() == set(spec.metrics)
    for name in spec.metrics:
        torch.testing.assert_close(fast.sums[name], slow.sums[name], rtol=1e-5, atol=1e-5)
    # counted positions: the predicted token t+2+s must be a loss token inside the sample
    expected = [sum(int(m[2 + s :].sum()) for m in batch["loss_mask"]) for s in range(steps)]
    assert fast.sums["count"].tolist() == expected
    assert fast_grads.keys() == slow_grads.keys()
    for name, grad in fast_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, slow_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_chain_mask_pattern():
    mask = chain_mask(3, 2, torch.device("cpu"))[0].int()
    assert mask.tolist() == [
        [1, 0, 0, 1, 0, 0, 1, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 1, 0, 0, 1],
    ]


def test_target_table_rows_are_the_positions_before_loss_tokens():
    lm_head = torch.nn.Linear(4, 10, bias=False)
    hidden = torch.randn(2, 6, 4)
    loss_mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    vocab_ids = torch.tensor([1, 4, 7])
    table = target_table(lm_head, hidden, loss_mask, vocab_ids)
    # read positions j (j >= 1) with loss_mask[j + 1]: (0,1), (0,2), (1,2), (1,3)
    assert table.row.tolist() == [[-1, 0, 1, -1, -1], [-1, -1, 2, 3, -1]]
    logits = lm_head(hidden[1, 3])
    assert table.best[3] == logits.argmax()
    torch.testing.assert_close(table.probs[3], logits[vocab_ids].softmax(-1))
    assert torch.equal(table.hidden[2], hidden[1, 2])


def test_objective_adds_noise_only_while_training(dataset):
    head = random_head(_target(), "eagle1", seed=2)
    spec = LossSpec("eagle1", 1)
    objective = HeadObjective(head, CastInput(_target().lm_head), spec, noise=0.1)
    batch = collate([dataset[0]], extra=2)
    objective.eval()
    with torch.no_grad():
        assert objective(batch)[0] == objective(batch)[0]
        objective.train()
        assert objective(batch)[0] != objective(batch)[0]
    assert "_borrowed" not in dict(objective.named_children())
    assert all(name.startswith("head.") for name, _ in objective.named_parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_soft_cross_entropy_matches_the_generic_one(dtype):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, generator=generator).to(dtype).requires_grad_()
    target = torch.randn(5, 11, generator=generator).softmax(-1)
    weights = torch.rand(5, generator=generator)
    loss, best = SoftCrossEntropy.apply(logits, target)
    (loss * weights).sum().backward()
    fast_grad, logits.grad = logits.grad, None
    expected = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none")
    (expected * weights).sum().backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(fast_grad, logits.grad)
    assert torch.equal(best, logits.float().argmax(-1)) and fast_grad.dtype == dtype


def test_batch_without_loss_tokens_gives_zero_loss(dataset):
    head = random_head(_target(), "eagle3", seed=2, draft_vocab=64)
    batch = collate([dataset[0]], extra=3)
    batch["loss_mask"].zero_()
    out, grads = _run(unrolled_loss, head, batch, LossSpec("eagle3", 2))
    assert out.loss == 0 and out.sums["count"].tolist() == [0, 0]
    assert all(not g.any() for g in grads.values())
