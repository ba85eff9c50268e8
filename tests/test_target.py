"""The target adapter: tree forward and cache compaction against sequential runs; load checks."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers
from helpers import VOCAB, make_model, make_target

from eagle.model.ea_model import EaModel
from eagle.model.target import TargetModel, UnsupportedTargetError
from eagle.model.tree import build_tree, tree_paths

TOKENS = torch.tensor([5, 6, 7, 8, 9, 10, 11])
PARENTS = torch.tensor([-1, 0, 0, 1, 2, 2, 3])
PROMPT = torch.tensor([[3, 14, 15, 92, 65, 35]])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mixtral"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tree_forward_equals_sequential_forward_of_every_path(arch, attn):
    target = make_target(arch, attn=attn)
    tree = build_tree(TOKENS, PARENTS, 3)
    with torch.no_grad():
        cache = target.new_cache()
        target.prefill(PROMPT, cache, None)
        out = target.forward_tree(tree.tokens, tree.depth, tree.mask, cache, PROMPT.shape[1], (-1,))
        for path in tree_paths(tree).tolist():
            nodes = [n for n in path if n >= 0]
            sequence = torch.cat((PROMPT, TOKENS[nodes][None]), dim=1)
            full = target.model(sequence, output_hidden_states=True)
            for i, node in enumerate(nodes):
                position = PROMPT.shape[1] + i
                torch.testing.assert_close(out.logits[node], full.logits[0, position])
                torch.testing.assert_close(out.features[node], full.hidden_states[-1][0, position])


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_cache_compaction_matches_a_sequential_run(arch):
    target = make_target(arch)
    tree = build_tree(TOKENS, PARENTS, 3)
    accepted = torch.tensor([0, 2, 5])  # root, node 2, node 5
    with torch.no_grad():
        cache = target.new_cache()
        target.prefill(PROMPT, cache, None)
        past = PROMPT.shape[1]
        target.forward_tree(tree.tokens, tree.depth, tree.mask, cache, past, None)
        TargetModel.keep(cache, past, accepted)
        assert cache.get_seq_length() == past + 3
        nxt = torch.tensor([42])
        after = target.forward_tree(
            nxt,
            torch.zeros(1, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.bool),
            cache,
            past + 3,
            None,
        )
        sequence = torch.cat((PROMPT, TOKENS[accepted][None], nxt[None]), dim=1)
        fresh = target.model(sequence).logits[0, -1]
    torch.testing.assert_close(after.logits[0], fresh)


def test_flex_attention_is_switched_to_sdpa_with_a_warning(caplog):
    model = make_model("llama")
    model.config._attn_implementation = "flex_attention"  # as if loaded with it
    with caplog.at_level(logging.WARNING):
        target = TargetModel(model)
    assert target.attention == "sdpa"
    assert "flex_attention" in caplog.text


class _MaskIgnoringLM(transformers.LlamaForCausalLM):
    """A model whose forward drops the attention mask: tree verification must refuse it."""

    def forward(self, *args, attention_mask=None, **kwargs):
        return super().forward(*args, **kwargs)


def test_a_model_that_ignores_custom_masks_is_refused():
    torch.manual_seed(0)
    model = _MaskIgnoringLM(make_model("llama").config).eval()
    with pytest.raises(UnsupportedTargetError, match="ignores custom 4D"):
        TargetModel(model)


def test_sliding_window_limits_the_context():
    torch.manual_seed(0)
    config = make_model("mistral").config
    config.sliding_window = 24
    target = TargetModel(transformers.MistralForCausalLM(config).eval())
    assert target.context_limit == 24
    from helpers import random_head

    model = EaModel(target, random_head(target, "eagle1"), None, eos_ids=set())
    with pytest.raises(ValueError, match="sliding-window"):
        model.eagenerate(PROMPT, max_new_tokens=30)
    assert model.eagenerate(PROMPT, max_new_tokens=8).shape[1] == PROMPT.shape[1] + 8


def test_qwen2_without_sliding_window_has_no_limit():
    assert make_target("qwen2").context_limit is None
    assert int(PROMPT.max()) < VOCAB
