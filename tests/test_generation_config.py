"""The one generation config (``GenerationConfig``: sampling, limits, tree) passed with each call:
its checks, a tree that changes nothing on the model, and the prefill timed on its own."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from helpers import VOCAB, greedy_sequences, make_target, random_head

from eagle.model.autotune import choose_total_token
from eagle.model.draft import DynamicTree
from eagle.model.ea_model import EaModel
from eagle.model.generate import GenerationConfig, SectionTimer
from eagle.model.tree import StaticTree
from eagle.model.verify import SamplingParams

PROMPT = torch.randint(0, VOCAB, (1, 7), generator=torch.Generator().manual_seed(3))


@functools.cache
def _model() -> EaModel:
    target = make_target("llama")
    return EaModel(target, random_head(target, "eagle3"), None, DynamicTree(8, 3, 2), set())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GenerationConfig(max_new_tokens=0), "max_new_tokens must be >= 1, got 0"),
        (lambda: GenerationConfig(max_new_tokens="9"), "max_new_tokens must be an integer >= 1"),
        (lambda: GenerationConfig(max_length=math.nan), "max_length must be an integer >= 1"),
        (lambda: GenerationConfig(max_new_tokens=2.5), "max_new_tokens must be an integer"),
        (lambda: GenerationConfig(sampling=0.7), "sampling must be a SamplingParams"),
        (lambda: GenerationConfig(tree=(8, 3, 2)), "tree must be a DynamicTree, a StaticTree"),
        (lambda: SamplingParams(temperature=math.nan), "temperature must be a finite number"),
        (lambda: SamplingParams(temperature=-1.0), "temperature must be >= 0, got -1.0"),
        (lambda: SamplingParams(top_p=1.5), "top_p must be in [0, 1], got 1.5"),
        (lambda: SamplingParams(top_k=True), "top_k must be an integer >= 0, got True"),
        (lambda: GenerationConfig.of(top_k=-2), "top_k must be >= 0, got -2"),
    ],
)
def test_bad_values_name_the_field_and_its_allowed_values(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_values_are_normalised_and_the_keyword_form_is_the_same_config():
    config = GenerationConfig.of(temperature=1, top_k=3.0, max_new_tokens=16.0)
    assert config == GenerationConfig(SamplingParams(1.0, 0.0, 3), 16)
    assert isinstance(config.sampling.top_k, int) and isinstance(config.max_new_tokens, int)
    assert GenerationConfig().sampling.greedy and GenerationConfig().tree is None


def test_a_tree_passed_with_the_call_changes_nothing_on_the_model():
    model = _model()
    before = model.tree
    reference = greedy_sequences(model.target, PROMPT, 12)
    trees = (DynamicTree(4, 2, 2), StaticTree.from_paths([[0], [1], [0, 0]]))
    for tree in trees:
        config = GenerationConfig(max_new_tokens=12, tree=tree)
        *_, last = model.generate_steps(PROMPT, config=config)
        assert torch.equal(last.ids, reference)  # lossless with any tree
        assert model.tree is before
    with pytest.raises(ValueError, match="top_k=97 exceeds the head's draft vocabulary"):
        model.generate_steps(PROMPT, config=GenerationConfig(tree=DynamicTree(8, 2, 97)))


def test_config_and_keyword_settings_are_not_mixed():
    with pytest.raises(ValueError, match="either as config=GenerationConfig"):
        _model().generate_steps(PROMPT, temperature=0.7, config=GenerationConfig())
    ids = _model().eagenerate(PROMPT, config=GenerationConfig(max_new_tokens=5))
    assert ids.shape[1] == PROMPT.shape[1] + 5  # the public methods take it too


def test_the_prefill_is_timed_as_its_own_section():
    timer = SectionTimer()
    steps = list(_model().generate_steps(PROMPT, max_new_tokens=6, timer=timer))
    assert set(timer.seconds) == {"prefill", "draft", "verify", "other"}
    plain = SectionTimer()
    list(_model().generate_steps(PROMPT, max_new_tokens=1, use_draft=False, timer=plain))
    assert set(plain.seconds) == {"prefill"} and len(steps) >= 2  # one token: the prefill only


def test_autotune_measures_without_changing_the_models_tree():
    model = _model()
    before = model.tree
    choice = choose_total_token(model, depth=2, top_k=2, new_tokens=6)
    assert model.tree is before
    assert choice.total_token in {row[0] for row in choice.rows}
