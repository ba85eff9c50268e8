"""End-to-end generation: EAGLE output equals plain greedy decoding, for every architecture.

Two head setups per case: (a) a random head, whose drafts are almost never accepted, and
(b) a head fitted to the target's continuation of the prompt, whose drafts mostly are (the
test asserts a mean acceptance length above 2, so acceptance and cache compaction really run).
The reference is transformers' own ``generate(do_sample=False)`` in fp32.
"""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import VOCAB, fit_head, greedy_sequences, make_target, random_head

from eagle.model.draft import DynamicTree
from eagle.model.ea_model import EaModel
from eagle.model.generate import stop_point
from eagle.model.tree import StaticTree

NEW_TOKENS = 48
TREES = {
    "dynamic": DynamicTree(total_token=12, depth=4, top_k=3),
    "static": StaticTree.from_paths([[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 0, 0]]),
}


@functools.cache
def _target(arch: str):
    return make_target(arch)


@functools.cache
def _prompt(seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(seed))


@functools.cache
def _head(arch: str, variant: str, fitted: bool):
    target = _target(arch)
    head = random_head(target, variant, draft_vocab=64 if not fitted else None)
    return fit_head(head, target, _prompt(0), NEW_TOKENS + 8) if fitted else head


@pytest.mark.parametrize("fitted", [False, True], ids=["random-head", "fitted-head"])
@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mixtral"])
def test_greedy_equals_plain_decoding(arch, variant, tree, fitted):
    target = _target(arch)
    model = EaModel(target, _head(arch, variant, fitted), None, TREES[tree], eos_ids=set())
    prompt = _prompt(0)
    reference = greedy_sequences(target, prompt, NEW_TOKENS)
    ids, new_tokens, idx = model.eagenerate(prompt, max_new_tokens=NEW_TOKENS, log=True)
    assert torch.equal(ids, reference)
    assert new_tokens == NEW_TOKENS
    tau = new_tokens / (idx + 1)
    if fitted:
        assert tau > 2.0, f"fitted head accepted too little (tau={tau:.2f})"
    else:
        assert idx + 1 >= NEW_TOKENS // 3  # many verification steps were crossed
    plain, plain_tokens, plain_idx = model.naivegenerate(
        prompt, max_new_tokens=NEW_TOKENS, log=True
    )
    assert torch.equal(plain, reference)
    assert plain_tokens == plain_idx + 1 == NEW_TOKENS  # tau of plain decoding is exactly 1


def test_mistral_and_eager_attention():
    for target in (make_target("mistral"), make_target("llama", attn="eager")):
        head = random_head(target, "eagle1")
        model = EaModel(
            target, fit_head(head, target, _prompt(0), 40), None, TREES["dynamic"], set()
        )
        ids, new_tokens, idx = model.eagenerate(_prompt(0), max_new_tokens=32, log=True)
        assert torch.equal(ids, greedy_sequences(target, _prompt(0), 32))
        assert new_tokens / (idx + 1) > 2.0


def _model(fitted: bool = True) -> EaModel:
    return EaModel(
        _target("llama"), _head("llama", "eagle1", fitted), None, TREES["dynamic"], set()
    )


def test_max_new_tokens_is_never_exceeded():
    model = _model()
    prompt = _prompt(0)
    full = greedy_sequences(model.target, prompt, 40)
    for limit in (1, 2, 5, 13, 40):
        ids, new_tokens, _ = model.eagenerate(prompt, max_new_tokens=limit, log=True)
        assert new_tokens == limit
        assert torch.equal(ids, full[:, : prompt.shape[1] + limit])


def test_max_length_caps_prompt_plus_output():
    model = _model()
    ids = model.eagenerate(_prompt(0), max_new_tokens=100, max_length=20)
    assert ids.shape[1] == 20


def test_stops_at_every_eos_id_and_returns_nothing_after():
    model = _model()
    prompt = _prompt(0)
    full = greedy_sequences(model.target, prompt, 40)[0, prompt.shape[1] :].tolist()
    first_repeat_free = next(i for i in range(5, 40) if full[i] not in full[:i])
    stop = full[first_repeat_free]
    for eos_ids in ({stop}, {stop, VOCAB + 5}):  # a second EOS id that never appears
        model.eos_ids = eos_ids
        ids, new_tokens, _ = model.eagenerate(prompt, max_new_tokens=40, log=True)
        generated = ids[0, prompt.shape[1] :].tolist()
        assert generated == full[: first_repeat_free + 1]
        assert new_tokens == first_repeat_free + 1
    model.eos_ids = set()


@pytest.mark.parametrize(
    ("tokens", "room", "expected"),
    [
        ([5, 6, 7], None, (3, False)),  # no EOS: everything
        ([5, 2, 7, 2], None, (2, True)),  # through the first EOS, which counts
        ([2], None, (1, True)),
        ([5, 6, 2], 2, (2, False)),  # the room ends it before the EOS
        ([5, 6, 2], 3, (3, True)),
        ([5, 6, 7], 5, (3, False)),
        ([], None, (0, False)),
    ],
)
def test_stop_point_keeps_tokens_through_the_first_eos_within_the_room(tokens, room, expected):
    assert stop_point(tokens, {2, 3}, room) == expected


def test_streaming_yields_growing_prefixes_of_the_final_output():
    model = _model()
    prompt = _prompt(0)
    steps = [ids.clone() for ids in model.ea_generate(prompt, max_new_tokens=30)]
    final = model.eagenerate(prompt, max_new_tokens=30)
    assert torch.equal(steps[-1], final)
    lengths = [s.shape[1] for s in steps]
    assert lengths == sorted(set(lengths))
    assert all(torch.equal(s, final[:, : s.shape[1]]) for s in steps)
    assert len(steps) < 30  # several tokens per step were accepted
    plain = list(model.naive_generate(prompt, max_new_tokens=10))
    assert [p.shape[1] for p in plain] == list(range(8, 18))


def test_batch_larger_than_one_is_refused():
    with pytest.raises(ValueError, match="batch size 1"):
        _model().eagenerate(torch.zeros(2, 5, dtype=torch.long))


def test_prompt_without_room_is_refused():
    with pytest.raises(ValueError, match="max_length"):
        _model().eagenerate(torch.zeros(1, 30, dtype=torch.long), max_length=30)


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 1.5}, {"top_k": -3}])
def test_bad_sampling_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        _model().eagenerate(_prompt(0), max_new_tokens=4, **kwargs)


def test_sampled_tokens_follow_the_target_distribution():
    model = _model(fitted=True)  # drafts are often accepted, so tokens 2-3 come from acceptance
    assert_sampling_follows_the_target(model, _prompt(0), torch.Generator().manual_seed(0))


def assert_sampling_follows_the_target(
    model: EaModel, prompt: torch.Tensor, generator: torch.Generator | None
) -> None:
    """First three sampled tokens (top-k 3 warping: 27 outcomes) against exact target probs.

    Runs on the model's device; ``generator`` None samples from the global generator."""
    from test_verify import chi_square_p_value

    from eagle.model.verify import SamplingParams, warp_logits

    device = model.target.device
    prompt, params = prompt.to(device), SamplingParams(temperature=1.0, top_k=3)
    warped = lambda ids: warp_logits(model.base_model(ids).logits[0, -1], params).softmax(-1)  # noqa: E731
    extend = lambda *ids: torch.cat((prompt, torch.tensor([ids], device=device)), 1)  # noqa: E731
    exact: dict[tuple[int, ...], float] = {}
    with torch.no_grad():
        p1 = warped(prompt)
        for a in p1.nonzero().flatten().tolist():
            p2 = warped(extend(a))
            for b in p2.nonzero().flatten().tolist():
                p3 = warped(extend(a, b))
                for c in p3.nonzero().flatten().tolist():
                    exact[(a, b, c)] = float(p1[a] * p2[b] * p3[c])
    keys = sorted(exact)
    counts = torch.zeros(len(keys))
    accepted = 0
    for _ in range(1500):
        steps = list(
            model.generate_steps(prompt, 1.0, 0.0, 3, max_new_tokens=3, generator=generator)
        )
        accepted += sum(s.accepted for s in steps)
        counts[keys.index(tuple(steps[-1].ids[0, -3:].tolist()))] += 1
    assert accepted > 200  # the acceptance path was exercised, not only bonus tokens
    assert chi_square_p_value(counts, torch.tensor([exact[k] for k in keys])) > 1e-3


def test_stopping_a_stream_early_leaves_no_global_mode_behind():
    stream = _model().ea_generate(_prompt(0), max_new_tokens=20)
    first = next(stream)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    first[0, 0] = 1  # yielded ids are ordinary tensors
    del stream
    assert torch.is_grad_enabled()
