"""Host syncs per decode step, counted on CPU.

On a GPU, an op whose output shape or value the host must read waits for the device: nonzero,
boolean-mask indexing, ``.item()``/``bool()``/``int()`` (aten ``_local_scalar_dense``),
``tolist``. The counter intercepts those ops on CPU tensors, so the count is the number of
device-to-host syncs the same step would make on a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import VOCAB, make_target, random_head

from eagle.evaluation.device_bench import HostSyncCounter
from eagle.model.draft import DynamicTree, EagleDrafter
from eagle.model.generate import GenerationConfig, decode
from eagle.model.tree import StaticTree
from eagle.model.verify import SamplingParams


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    """The device benchmark's HostSyncCounter, also counting ``Tensor.tolist`` and ``Tensor.numpy`` (C++ reads that
    dispatch no op on CPU, but copy to the host on a GPU)."""
    counter = HostSyncCounter()
    for name in ("tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            counter.counts[f"Tensor.{_name}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    with counter:
        yield counter
    monkeypatch.undo()


def _step_syncs(monkeypatch, tree, params: SamplingParams, steps: int = 4) -> list[dict]:
    """The syncs of each of ``steps`` decode steps after the prefill, by op."""
    target = make_target("llama")
    head = random_head(target, "eagle3")
    drafter = EagleDrafter(head, tree, head.config.default_feature_layers(target.num_layers))
    prompt = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    run = decode(target, drafter, prompt, GenerationConfig(params, 64, 512), set(), generator)
    next(run)  # the prefill
    counts = []
    for _ in range(steps):
        with counting_syncs(monkeypatch) as counter:
            step = next(run)
        counts.append(dict(counter.counts))
        assert not step.finished
    return counts


GREEDY = SamplingParams()
SAMPLING = SamplingParams(temperature=0.8, top_p=0.9, top_k=20)


@pytest.mark.parametrize("params", [GREEDY, SAMPLING], ids=["greedy", "sampling"])
def test_a_dynamic_tree_step_of_depth_7_syncs_at_most_3_times(monkeypatch, params):
    counts = _step_syncs(monkeypatch, DynamicTree(total_token=60, depth=7, top_k=10), params)
    assert all(sum(step.values()) <= 3 for step in counts), counts


def test_a_static_tree_step_syncs_at_most_3_times(monkeypatch):
    tree = StaticTree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 0, 0]])
    counts = _step_syncs(monkeypatch, tree, GREEDY)
    assert all(sum(step.values()) <= 3 for step in counts), counts


def test_the_counter_sees_each_kind_of_sync(monkeypatch):
    x = torch.arange(6)
    with counting_syncs(monkeypatch) as counter:
        x[x > 2]
        x.nonzero()
        x[x > 4] = 0
        int(x[0])
        bool(x[1] > 0)
        x.tolist()
        x.numpy()
        x.repeat_interleave(x)
        x[torch.tensor([1, 2])]  # integer indexing does not sync
        torch.topk(x, 2)
    assert counter.total == 8, dict(counter.counts)
