"""Weight-first row products: equal to ``F.linear``, applied only where they may be, chosen by
timings, and lossless end to end (tree logits and greedy EAGLE output)."""

from __future__ import annotations

import pytest
import torch
import transformers
from helpers import TINY_FIELDS, make_model, make_target, random_head
from torch import nn
from transformers import AutoModelForCausalLM

from eagle.model import products
from eagle.model.draft import DynamicTree
from eagle.model.ea_model import EaModel
from eagle.model.products import RowProduct, faster_product, measure_row_product, weight_first
from eagle.model.target import TargetModel

WEIGHT_FIRST = RowProduct(weight_first=True)


@pytest.mark.parametrize("rows", [2, 5, 33])
@pytest.mark.parametrize("bias", [False, True])
def test_weight_first_equals_f_linear(rows, bias):
    torch.manual_seed(rows)
    linear = nn.Linear(48, 300, bias=bias)
    x = torch.randn(1, rows, 48)
    expected = linear(x)
    got = WEIGHT_FIRST(linear, x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected)


def test_one_row_and_special_layers_are_called_as_they_are():
    class Doubled(nn.Linear):  # e.g. a quantized layer: its own forward must run
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    plain, special = nn.Linear(16, 40), Doubled(16, 40)
    one, many = torch.randn(1, 16), torch.randn(4, 16)
    assert torch.equal(WEIGHT_FIRST(plain, one), plain(one))
    assert torch.equal(WEIGHT_FIRST(special, many), special(many))
    assert torch.equal(RowProduct()(plain, many), plain(many))


@pytest.mark.parametrize(
    ("linear_ms", "first_ms", "chosen"),
    [
        ([20.0, 48.0, 71.0], [7.5, 13.0, 35.7], True),  # measured on the 2-core AMD EPYC
        ([20.0, 48.0, 71.0], [7.5, 13.0, 60.0], False),  # loses its edge at one size
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], False),  # a tie keeps F.linear
        ([], [], False),
    ],
)
def test_the_decision_needs_a_clear_win_at_every_size(linear_ms, first_ms, chosen):
    assert faster_product(linear_ms, first_ms).weight_first is chosen


def test_measurement_times_large_weights_only(monkeypatch):
    timed = []

    def fake_timing(product, args, repeats):
        timed.append(args[0].shape[0])
        return 1.0 if product is weight_first else 10.0

    monkeypatch.setattr(products, "_best_ms", fake_timing)
    assert measure_row_product(torch.zeros(64, 32)) == RowProduct()
    assert timed == []  # too small to be worth a measurement
    assert measure_row_product(torch.zeros(products.MIN_PROBED_WEIGHT // 64, 64)) == WEIGHT_FIRST
    assert sorted(set(timed)) == sorted(products.PROBE_ROWS)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "mixtral"])
def test_weight_first_tree_logits_equal_the_models(arch):
    reference = make_target(arch)
    target = TargetModel(make_model(arch), row_product=WEIGHT_FIRST)
    assert target.own_logits and not reference.own_logits  # tiny weights are never timed
    tokens, depth = torch.tensor([5, 6, 7, 8]), torch.tensor([0, 1, 1, 2])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]).bool()
    prompt = torch.tensor([[3, 14, 15, 92, 65]])
    outputs = []
    with torch.no_grad():
        for t in (reference, target):
            cache = t.new_cache()
            t.prefill(prompt, cache, None)
            outputs.append(t.forward_tree(tokens, depth, mask, cache, prompt.shape[1], (-1,)))
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits)
    assert torch.equal(outputs[1].features, outputs[0].features)


def test_soft_capped_logits_stay_with_the_model():
    fields = {**TINY_FIELDS, "num_hidden_layers": 2}
    config = transformers.Gemma2Config(**fields, head_dim=8, final_logit_softcapping=30.0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    target = TargetModel(model, row_product=WEIGHT_FIRST)
    assert not target.own_logits
    assert target.row_product == WEIGHT_FIRST  # still the device's choice, for the drafter


@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
def test_greedy_output_is_unchanged_with_weight_first_products(variant):
    target = TargetModel(make_model("qwen2"), row_product=WEIGHT_FIRST)
    head = random_head(target, variant)
    model = EaModel(target, head, None, DynamicTree(total_token=10, depth=3, top_k=3), set())
    prompt = torch.tensor([[3, 14, 15, 92, 65, 35, 8]])
    eagle, _, steps = model.eagenerate(prompt, max_new_tokens=32, log=True)
    plain = model.naivegenerate(prompt, max_new_tokens=32)
    assert torch.equal(eagle, plain)
    assert steps + 1 < 32 or eagle.shape[1] == prompt.shape[1] + 32


@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
def test_head_logits_weight_first_equal_f_linear(variant):
    head = random_head(make_target(), variant, draft_vocab=64 if variant == "eagle3" else None)
    hidden = torch.randn(6, head.config.hidden_size)
    torch.testing.assert_close(head.logits(hidden, WEIGHT_FIRST), head.logits(hidden))
