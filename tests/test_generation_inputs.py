"""Bad arguments to the generation API and to ``EaModel.from_pretrained`` fail before any work.

Each case asserts a ValueError whose message names the argument, and that the target ran no
forward pass (the streaming forms raise when called, not at their first step). Targets with
learned positions (GPT-2's ``n_positions``) stop where plain decoding stops, with the same ids.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import transformers
from helpers import VOCAB, fit_head, greedy_sequences, make_target, random_head, save_target_dir
from transformers import AutoModelForCausalLM

from eagle.model.checkpoint import save_head
from eagle.model.draft import DynamicTree
from eagle.model.ea_model import EaModel
from eagle.model.target import TargetModel
from eagle.model.tree import StaticTree

PROMPT = torch.tensor([[5, 9, 11, 4, 7]])


@functools.cache
def _model() -> EaModel:
    target = make_target("llama")
    head = random_head(target, "eagle3", draft_vocab=64)
    return EaModel(target, head, None, DynamicTree(8, 3, 3), eos_ids=set())


@contextmanager
def _forward_counter(model: EaModel) -> Iterator[list[int]]:
    """Count the target's forward passes inside the block."""
    calls = [0]

    def count(module, args, kwargs):
        calls[0] += 1

    handle = model.base_model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


BAD_GENERATION_ARGS = [
    ("input_ids", {"input_ids": torch.zeros(1, 0, dtype=torch.long)}),  # empty prompt
    ("input_ids", {"input_ids": PROMPT.float()}),
    ("input_ids", {"input_ids": PROMPT.bool()}),
    ("input_ids", {"input_ids": torch.tensor([[5, VOCAB]])}),  # outside the vocabulary
    ("input_ids", {"input_ids": torch.tensor([[5, -1]])}),
    ("input_ids", {"input_ids": [[5, 9, 11]]}),  # not a tensor
    ("input_ids", {"input_ids": PROMPT[0]}),  # [L] instead of [1, L]
    ("input_ids", {"input_ids": PROMPT.expand(2, -1)}),  # batch of 2
    ("temperature", {"temperature": math.nan}),
    ("temperature", {"temperature": -0.5}),
    ("temperature", {"temperature": math.inf}),
    ("temperature", {"temperature": "0.7"}),
    ("temperature", {"temperature": None}),
    ("top_p", {"top_p": 1.5}),
    ("top_p", {"top_p": -0.1}),
    ("top_p", {"top_p": math.nan}),
    ("top_k", {"top_k": -3}),
    ("top_k", {"top_k": 2.5}),
    ("top_k", {"top_k": math.nan}),
    ("top_k", {"top_k": True}),
    ("max_new_tokens", {"max_new_tokens": 0}),
    ("max_new_tokens", {"max_new_tokens": 2.5}),
    ("max_new_tokens", {"max_new_tokens": "8"}),
    ("max_new_tokens", {"max_new_tokens": math.inf}),
    ("max_new_tokens", {"max_new_tokens": None}),
    ("max_length", {"max_length": 0}),
    ("max_length", {"max_length": 64.5}),
    ("max_length", {"max_length": math.nan}),
    ("max_length", {"max_length": 5}),  # the 5-token prompt leaves no room
    ("generator", {"generator": 1234}),
]
SURFACES = ["eagenerate", "naivegenerate", "ea_generate", "naive_generate"]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    ("argument", "kwargs"),
    BAD_GENERATION_ARGS,
    ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_GENERATION_ARGS)],
)
def test_bad_generation_arguments_name_the_argument_before_any_work(surface, argument, kwargs):
    model = _model()
    arguments = {"input_ids": PROMPT, "max_new_tokens": 8} | kwargs
    with _forward_counter(model) as calls, pytest.raises(ValueError) as err:
        getattr(model, surface)(**arguments)  # the streams raise here, before iterating
    assert argument in str(err.value)
    assert calls[0] == 0
    with _forward_counter(model) as calls:
        model.eagenerate(PROMPT, max_new_tokens=2)
    assert calls[0] > 0  # the counter sees real work


def test_top_k_given_as_an_integral_float_still_works():
    ids = _model().eagenerate(PROMPT, temperature=1.0, top_k=3.0, max_new_tokens=4.0)
    assert ids.shape == (1, PROMPT.shape[1] + 4)


# -- from_pretrained ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        )
    )  # fmt: skip
    save_target_dir(model, root / "target")
    save_head(random_head(TargetModel(model), "eagle3", draft_vocab=64), root / "head3")
    return root


BAD_LOAD_ARGS = [
    ("base_model_path", {"base_model_path": None}),
    ("base_model_path", {"base_model_path": ""}),
    ("base_model_path", {"base_model_path": 3}),
    ("ea_model_path", {"ea_model_path": None}),
    ("total_token", {"total_token": 0}),
    ("total_token", {"total_token": -2}),
    ("total_token", {"total_token": 2.5}),
    ("total_token", {"total_token": "60"}),
    ("total_token", {"total_token": math.nan}),
    ("depth", {"depth": 0}),
    ("depth", {"depth": 1.5}),
    ("top_k", {"top_k": 0}),
    ("top_k", {"top_k": "10"}),
    ("threshold", {"threshold": math.nan}),
    ("threshold", {"threshold": "1.0"}),
    ("use_eagle3", {"use_eagle3": "yes"}),
    ("use_eagle3", {"use_eagle3": 1}),
    ("tree", {"tree_choices": "no_such_preset"}),
    ("tree_choices", {"tree_choices": [[0], ["a"]]}),
    ("tree_choices", {"tree_choices": [[0], [-1]]}),
    ("tree_choices", {"tree_choices": [[0, 1]]}),  # not prefix-closed
    ("tree_choices", {"tree_choices": 5}),
]


@pytest.mark.parametrize(
    ("argument", "kwargs"),
    BAD_LOAD_ARGS,
    ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_LOAD_ARGS)],
)
def test_bad_from_pretrained_arguments_fail_before_loading(dirs, monkeypatch, argument, kwargs):
    def no_loading(*args, **kw):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(TargetModel, "from_pretrained", no_loading)
    monkeypatch.setattr("eagle.model.ea_model.resolve_model_path", no_loading)
    arguments = {"base_model_path": str(dirs / "target"), "ea_model_path": str(dirs / "head3")}
    with pytest.raises(ValueError) as err:
        EaModel.from_pretrained(**(arguments | kwargs))
    assert argument in str(err.value)


@pytest.mark.parametrize(
    ("argument", "kwargs"),
    [("top_k", {"top_k": 65}), ("tree_choices", {"tree_choices": [[0], [64]]})],
    ids=["top_k", "static-rank"],
)
def test_tree_branching_beyond_the_draft_vocabulary_is_refused_at_load(dirs, argument, kwargs):
    with pytest.raises(ValueError, match="draft vocabulary") as err:
        EaModel.from_pretrained(str(dirs / "target"), str(dirs / "head3"), **kwargs)
    assert argument in str(err.value)
    model = EaModel.from_pretrained(str(dirs / "target"), str(dirs / "head3"), top_k=64, depth=1)
    with pytest.raises(ValueError, match="top_k=65"):
        model.set_tree(DynamicTree(10, 2, 65))


# -- targets with learned positions ---------------------------------------------------------

N_POSITIONS, LONG_PROMPT = 64, 50


@functools.cache
def _gpt2() -> tuple[TargetModel, torch.Tensor]:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=N_POSITIONS,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    prompt = torch.randint(3, VOCAB, (1, LONG_PROMPT), generator=torch.Generator().manual_seed(1))
    return TargetModel(model), prompt


@functools.cache
def _gpt2_models() -> dict[str, EaModel]:
    target, prompt = _gpt2()
    fitted = fit_head(random_head(target, "eagle1"), target, prompt, N_POSITIONS - LONG_PROMPT)
    static = StaticTree.from_paths([[0], [1], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0, 0]])
    return {
        "dynamic": EaModel(target, fitted, None, DynamicTree(12, 5, 3), eos_ids=set()),
        "static": EaModel(target, fitted, None, static, eos_ids=set()),
    }


def _max_tree_position(target: TargetModel, monkeypatch) -> list[int]:
    """Record the largest position the target is asked to read in tree verifications."""
    seen = [0]
    forward_tree = target.forward_tree

    def spy(tokens, depth, mask, cache, past, layers):
        seen[0] = max(seen[0], past + int(depth.max()))
        return forward_tree(tokens, depth, mask, cache, past, layers)

    monkeypatch.setattr(target, "forward_tree", spy)
    return seen


def test_learned_positions_are_detected():
    assert _gpt2()[0].position_limit == N_POSITIONS
    assert make_target("llama").position_limit is None  # rotary: no table


@pytest.mark.parametrize("new_tokens", [14, 15])
def test_eagle_stays_within_learned_positions_and_equals_plain_decoding(new_tokens, monkeypatch):
    target, prompt = _gpt2()
    reference = greedy_sequences(target, prompt, new_tokens)
    seen = _max_tree_position(target, monkeypatch)
    for name, model in _gpt2_models().items():
        seen[0] = 0
        ids, count, idx = model.eagenerate(prompt, max_new_tokens=new_tokens, log=True)
        assert torch.equal(ids, reference), name
        assert count == new_tokens and idx + 1 < new_tokens, name  # drafts were accepted
        assert seen[0] <= N_POSITIONS - 1, name
        assert torch.equal(model.naivegenerate(prompt, max_new_tokens=new_tokens), reference)


def test_output_is_capped_at_the_learned_positions_like_max_length(caplog):
    prompt = _gpt2()[1]
    model = _gpt2_models()["dynamic"]
    room = N_POSITIONS + 1 - LONG_PROMPT  # positions 0..63 are read, so token 64 can be produced
    with caplog.at_level(logging.WARNING, logger="eagle.model.generate"):
        eagle = model.eagenerate(prompt, max_new_tokens=40)
    assert "learned positions" in caplog.text
    assert torch.equal(eagle, model.naivegenerate(prompt, max_new_tokens=40))
    assert eagle.shape[1] == LONG_PROMPT + room
    full = torch.randint(3, VOCAB, (1, N_POSITIONS))
    assert model.eagenerate(full, max_new_tokens=8).shape[1] == N_POSITIONS + 1
    for surface in SURFACES:
        with pytest.raises(ValueError, match="input_ids has 65 tokens"):
            getattr(model, surface)(torch.randint(3, VOCAB, (1, N_POSITIONS + 1)))
