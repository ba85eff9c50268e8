"""Heads written here are served by vLLM and SGLang as they were trained.

Each engine's rule is restated below as a small pure function over config.json and the weights,
from its source (read for facts only, cited per function); the tests apply it to heads written by
``save_head`` and to the shipped head, and compare with the layers and weights the head was
trained with. Nothing here runs either engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import head_config, make_target

from eagle.model.checkpoint import (
    HeadCheckpointError,
    feature_layers_of,
    load_head,
    read_state_dict,
    save_head,
)
from eagle.model.draft_head import TargetParts, build_head
from eagle.train.config import HeadSettings, load_config

SHIPPED = Path(__file__).parents[1] / "eagle/model/heads/smollm2-135m-instruct-eagle3"
CONFIGS = Path(__file__).parents[1] / "eagle/train/configs"
SMOLLM2_LAYERS = 30


def vllm_captured(config: dict, num_layers: int) -> tuple[int, ...]:
    """transformers hidden_states indices vLLM feeds an EAGLE-3 head.

    vllm-project/vllm vllm/v1/worker/gpu/spec_decode/eagle/eagle3_utils.py @0cfdd2e: the
    draft config's top-level ``eagle_aux_hidden_state_layer_ids`` (the nested ``eagle_config``
    one is not read), else (2, L // 2, L - 3) (vllm/model_executor/models/llama.py @e06c9ba);
    ``LlamaModel.forward`` there captures the input of layer i, which is hidden_states[i].
    """
    ids = config.get("eagle_aux_hidden_state_layer_ids")
    if not ids:
        ids = [2, num_layers // 2, num_layers - 3]
    return tuple(ids)


def sglang_captured(config: dict, num_layers: int) -> tuple[int, ...]:
    """transformers hidden_states indices SGLang feeds an EAGLE-3 head.

    sgl-project/sglang python/sglang/srt/model_executor/model_runner.py @0005834 reads
    ``eagle_config["eagle_aux_hidden_state_layer_ids"]`` (None when absent);
    python/sglang/srt/models/llama.py @0023954 ``set_eagle3_layers_to_capture`` adds one to
    each id, or takes (2, L // 2, L - 3), and ``LlamaModel.forward`` captures the input of
    layer i, which is hidden_states[i].
    """
    ids = (config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    if ids is None:
        return (2, num_layers // 2, num_layers - 3)
    return tuple(i + 1 for i in ids)


def vllm_fc_bias(state: dict, width: int) -> torch.Tensor:
    """The EAGLE-1 fc bias vLLM computes with: none (vllm-project/vllm
    vllm/model_executor/models/llama_eagle.py @00da923 builds fc with bias=False and skips a
    checkpoint fc.bias), i.e. zero."""
    return torch.zeros(width)


def sglang_fc_bias(state: dict, width: int) -> torch.Tensor | None:
    """The EAGLE-1 fc bias SGLang computes with: the checkpoint's ``fc.bias``
    (sgl-project/sglang python/sglang/srt/models/llama_eagle.py @034b3be builds
    ``nn.Linear(2H, H)`` with a bias); None = no value loaded, the random initialisation stays."""
    return state.get("fc.bias")


@pytest.fixture(scope="module")
def target():
    return make_target("llama")


def _head(target, variant: str, **overrides):
    parts = TargetParts(target.embed_tokens, target.lm_head)
    return build_head(head_config(variant, **overrides), parts, False)


def _saved_config(head, tmp_path) -> dict:
    return json.loads((save_head(head, tmp_path) / "config.json").read_text())


@pytest.mark.parametrize(
    ("layers", "num_layers"),
    [((2, 15, 27), 30), ((3, 9, 14), 32), ((0, 1, 2), 4), ((1, 2, 3), 6)],
    ids=["smollm2-default", "not-the-default", "embeddings-first", "small"],
)
def test_both_engines_capture_the_layers_an_eagle3_head_was_trained_on(
    tmp_path, target, layers, num_layers
):
    head = _head(target, "eagle3", feature_layers=layers)
    config = _saved_config(head, tmp_path)
    assert vllm_captured(config, num_layers) == layers
    assert sglang_captured(config, num_layers) == layers
    parts = TargetParts(target.embed_tokens, target.lm_head)
    assert load_head(tmp_path, parts).config.feature_layers == layers


def test_a_head_with_default_layers_is_captured_as_this_library_reads_it(tmp_path, target):
    head = _head(target, "eagle3")
    assert head.config.feature_layers is None
    config = _saved_config(head, tmp_path)
    assert "eagle_aux_hidden_state_layer_ids" not in config and "eagle_config" not in config
    for num_layers in (4, 30, 32):
        ours = head.config.default_feature_layers(num_layers)
        assert vllm_captured(config, num_layers) == ours == sglang_captured(config, num_layers)


def test_the_shipped_head_is_captured_on_its_trained_layers():
    config = json.loads((SHIPPED / "config.json").read_text())
    trained = (2, 15, 27)  # hidden_states of the 30-layer target (model card)
    assert vllm_captured(config, SMOLLM2_LAYERS) == trained
    assert sglang_captured(config, SMOLLM2_LAYERS) == trained
    assert feature_layers_of(config, "eagle3") == trained


def test_one_field_alone_would_mislead_one_engine():
    # why both fields are written: the nested field alone is invisible to vLLM, and the same
    # numbers at the top level would be read one layer early by vLLM's rule
    nested_only = {"eagle_config": {"eagle_aux_hidden_state_layer_ids": [2, 8, 13]}}
    assert sglang_captured(nested_only, 32) == (3, 9, 14)
    assert vllm_captured(nested_only, 32) == (2, 16, 29)
    top_with_nested_numbers = {"eagle_aux_hidden_state_layer_ids": [2, 8, 13]}
    assert vllm_captured(top_with_nested_numbers, 32) == (2, 8, 13)


def test_old_configs_read_as_before_and_disagreeing_fields_are_refused():
    old = {"eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 14, 26]}}
    assert feature_layers_of(old, "eagle3") == (2, 15, 27)
    assert feature_layers_of({"eagle_aux_hidden_state_layer_ids": [2, 15, 27]}, "eagle3") == (
        2,
        15,
        27,
    )
    assert feature_layers_of({}, "eagle3") is None
    both = {**old, "eagle_aux_hidden_state_layer_ids": [1, 14, 26]}
    with pytest.raises(HeadCheckpointError, match="name different target layers"):
        feature_layers_of(both, "eagle3")


def test_eagle1_fc_bias_rule(tmp_path, target):
    # the trainer's default, and the generic EAGLE-1 config, train without an fc bias
    assert HeadSettings().bias is False
    for name in ("eagle1_generic.json", "smollm2_eagle1.json"):
        assert load_config(CONFIGS / name).head.bias is False
    head = _head(target, "eagle1", bias=False)
    width = head.config.hidden_size
    directory = save_head(head, tmp_path / "no-bias")
    config = json.loads((directory / "config.json").read_text())
    state = read_state_dict(directory)
    assert config["bias"] is False  # never true: vLLM would add an o_proj bias
    assert torch.equal(sglang_fc_bias(state, width), vllm_fc_bias(state, width))
    parts = TargetParts(target.embed_tokens, target.lm_head)
    again = load_head(directory, parts)
    assert again.config.bias is False and again.fc.bias is None
    # a head trained with a bias keeps it, and its config leaves "bias" out (true by default)
    biased = save_head(_head(target, "eagle1", bias=True), tmp_path / "bias")
    assert "bias" not in json.loads((biased / "config.json").read_text())
    assert load_head(biased, parts).config.bias is True
