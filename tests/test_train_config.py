"""Training configs: strict JSON loading, variant defaults, head fields from the target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import transformers

from eagle.train.config import (
    ConfigError,
    build_head_config,
    config_from_dict,
    load_config,
    with_overrides,
)

CONFIGS = Path(__file__).parent.parent / "eagle" / "train" / "configs"


def _target_config(**overrides):
    fields = dict(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=6, vocab_size=100, rms_norm_eps=1e-5, max_position_embeddings=4096,
        rope_theta=50000.0,
    )  # fmt: skip
    fields.update(overrides)
    return transformers.LlamaConfig(**fields)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"variant": "eagle1", "lrr": 1}, "lrr"),
        ({"variant": "eagle1", "train": {"batchsize": 4}}, "batchsize"),
        ({"variant": "eagle3", "head": {"hiden_size": 4}}, "hiden_size"),
    ],
)
def test_unknown_keys_are_errors_that_name_them(data, named):
    with pytest.raises(ConfigError, match=named):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"variant": "eagle2"}, "variant"),
        ({"train": {}}, "variant"),
        ({"variant": "eagle1", "train": {"lr": "fast"}}, r"train\.lr"),
        ({"variant": "eagle1", "train": {"epochs": 1.5}}, r"train\.epochs"),
        ({"variant": "eagle1", "train": {"betas": [0.9]}}, r"train\.betas"),
        ({"variant": "eagle1", "head": {"bias": 1}}, r"head\.bias"),
        ({"variant": "eagle1", "train": {"val_fraction": 1.0}}, "val_fraction"),
        ({"variant": "eagle3", "head": {"num_hidden_layers": 2}}, "one layer"),
    ],
)
def test_bad_values_are_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_variant_defaults_and_overrides():
    one, three = config_from_dict({"variant": "eagle1"}), config_from_dict({"variant": "eagle3"})
    assert (one.noise, one.unroll_steps) == (0.1, 1)
    assert (three.noise, three.unroll_steps) == (0.0, 7)
    assert one.train.lr == 3e-5 and one.train.betas == (0.9, 0.95) and one.train.grad_clip == 0.5
    changed = with_overrides(three, lr=1e-3, batch_size=None, epochs=3)
    assert (changed.train.lr, changed.train.batch_size, changed.train.epochs) == (1e-3, 4, 3)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*eagle*.json")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.variant in path.name
    assert "/home/" not in path.read_text() and "~" not in path.read_text()


def test_deepspeed_config_is_json():
    ds = json.loads((CONFIGS / "ds_config.json").read_text())
    assert ds["bf16"]["enabled"] == "auto" and "zero_optimization" in ds


def test_head_fields_default_from_the_target():
    head = build_head_config(
        config_from_dict({"variant": "eagle1"}), _target_config(), 100, None, None
    )
    assert (head.hidden_size, head.intermediate_size, head.num_attention_heads) == (64, 128, 4)
    assert (head.num_key_value_heads, head.rms_norm_eps, head.rope_theta) == (2, 1e-5, 50000.0)
    assert head.max_position_embeddings == 4096 and head.vocab_size == 100
    assert head.variant == "eagle1" and head.draft_vocab_size is None


def test_eagle3_head_may_be_narrower_and_takes_the_data_vocabulary():
    config = config_from_dict({"variant": "eagle3", "head": {"hidden_size": 32}})
    head = build_head_config(config, _target_config(), 100, 40, (2, 3, 3))
    assert head.hidden_size == 32 and head.target_hidden_size == 64
    assert head.intermediate_size == 64  # the target's MLP ratio
    assert head.draft_vocab_size == 40 and head.feature_layers == (2, 3, 3)
    assert head.feature_width == 3 * 64
    explicit = config_from_dict({"variant": "eagle3", "head": {"draft_vocab_size": 20}})
    assert build_head_config(explicit, _target_config(), 100, 40, None).draft_vocab_size == 20


def test_eagle1_head_must_have_the_target_width():
    config = config_from_dict({"variant": "eagle1", "head": {"hidden_size": 32}})
    with pytest.raises(ConfigError, match="target's width"):
        build_head_config(config, _target_config(), 100, None, None)


def test_llama3_rope_scaling_is_carried_and_unknown_scaling_falls_back():
    scaled = _target_config(
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
        }
    )  # fmt: skip
    head = build_head_config(config_from_dict({"variant": "eagle3"}), scaled, 100, None, None)
    assert head.rope_scaling["rope_type"] == "llama3" and head.rope_theta == 500000.0
    yarn = _target_config(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0})
    plain = build_head_config(config_from_dict({"variant": "eagle3"}), yarn, 100, None, None)
    assert plain.rope_scaling is None


def test_an_original_head_config_is_recognised_and_translated(tmp_path):
    """The original EAGLE trained from a transformers model config of the head (e.g.
    vicuna_7B_config.json); it is refused with the equivalent training config, which loads."""
    from eagle.train.config import from_original_head_config, load_config

    original = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 1,
        "num_key_value_heads": 32, "rms_norm_eps": 1e-06, "vocab_size": 32000,
        "max_position_embeddings": 2048, "torch_dtype": "float16",
    }  # fmt: skip
    path = tmp_path / "vicuna_7B_config.json"
    path.write_text(json.dumps(original))
    with pytest.raises(ConfigError, match="head architecture config of the original EAGLE"):
        load_config(path)
    translated = from_original_head_config(original)
    assert translated["variant"] == "eagle1"
    assert (
        translated["head"]["hidden_size"] == 4096 and translated["head"]["num_hidden_layers"] == 1
    )
    (tmp_path / "new.json").write_text(json.dumps(translated))
    assert load_config(tmp_path / "new.json").head.intermediate_size == 11008
    eagle3 = from_original_head_config({**original, "draft_vocab_size": 32000})
    assert eagle3["variant"] == "eagle3" and eagle3["head"]["draft_vocab_size"] == 32000
    (tmp_path / "new3.json").write_text(json.dumps(eagle3))
    assert load_config(tmp_path / "new3.json").variant == "eagle3"
