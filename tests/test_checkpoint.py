"""Head checkpoints: the published key names and shapes load, round-trip, and bad ones fail loudly.

The state dicts here are written out by hand from the published formats (spec section 4), not
produced by the code under test.
"""

from __future__ import annotations

import json

import helpers
import pytest
import torch
from helpers import HIDDEN, VOCAB, make_target
from helpers import write_head_dir as write

from eagle.model.checkpoint import HeadCheckpointError, load_head, read_state_dict, save_head
from eagle.model.draft_head import Rotary, TargetParts

H, FFN, KV_HEADS, HEAD_DIM, DRAFT_VOCAB = HIDDEN, 64, 2, 8, 40
KV = KV_HEADS * HEAD_DIM


def eagle1_state(bias: bool = True, qkv_bias: bool = False, embedding: bool = True) -> dict:
    return helpers.eagle1_state(FFN, KV, bias=bias, qkv_bias=qkv_bias, embedding=embedding)


def eagle3_state() -> dict:
    state = helpers.eagle3_keys(
        heads=4, kv_heads=KV_HEADS, head_dim=HEAD_DIM, ffn=FFN, draft_vocab=DRAFT_VOCAB, maps=False
    )
    kept = torch.arange(0, 2 * DRAFT_VOCAB, 2)  # every other target id is in the draft vocab
    state["d2t"] = kept - torch.arange(DRAFT_VOCAB)
    state["t2d"] = torch.zeros(VOCAB, dtype=torch.bool).index_fill(0, kept, True)
    return state


def config(eagle3: bool = False, **extra) -> dict:
    out = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": H,
        "intermediate_size": FFN,
        "num_attention_heads": 4,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": 1,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "torch_dtype": "float16",
        "bos_token_id": 1,
    }
    if eagle3:
        out["draft_vocab_size"] = DRAFT_VOCAB
    return out | extra


@pytest.fixture(scope="module")
def parts():
    target = make_target("llama")
    return TargetParts(target.embed_tokens, target.lm_head)


def _assert_same_weights(head, state):
    loaded = head.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "bin"])
@pytest.mark.parametrize(
    "kind", ["eagle1", "eagle1-no-bias", "eagle1-qkv-bias", "eagle1-no-embed", "eagle3"]
)
def test_published_formats_load_and_round_trip(tmp_path, parts, kind, safetensors):
    if kind == "eagle3":
        cfg, state = config(eagle3=True), eagle3_state()
    else:
        bias, qkv = kind != "eagle1-no-bias", kind == "eagle1-qkv-bias"
        cfg = config(bias=bias, qkv_bias=qkv) if kind != "eagle1" else config()
        state = eagle1_state(bias, qkv, embedding=kind != "eagle1-no-embed")
    head = load_head(write(tmp_path / "in", cfg, state, safetensors), parts)
    assert head.variant == ("eagle3" if kind == "eagle3" else "eagle1")
    _assert_same_weights(head, state)
    if kind == "eagle1-no-embed":
        assert head.embed_tokens is None  # the target's embedding is used
    out = save_head(head, tmp_path / "out", safe_serialization=safetensors)
    saved_cfg = json.loads((out / "config.json").read_text())
    if kind == "eagle3":
        assert saved_cfg["architectures"] == ["LlamaForCausalLMEagle3"]
        assert saved_cfg["draft_vocab_size"] == DRAFT_VOCAB
    if kind == "eagle1-no-bias":  # a zero fc.bias is written for SGLang and dropped on load
        assert saved_cfg["bias"] is False and not read_state_dict(out)["fc.bias"].any()
    again = load_head(out, parts)
    assert set(again.state_dict()) == set(state)
    _assert_same_weights(again, state)


def test_variant_given_explicitly_must_agree(tmp_path, parts):
    directory = write(tmp_path, config(eagle3=True), eagle3_state())
    assert load_head(directory, parts, use_eagle3=True).variant == "eagle3"
    with pytest.raises(HeadCheckpointError, match="use_eagle3=False"):
        load_head(directory, parts, use_eagle3=False)


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path, parts):
    state = eagle1_state()
    del state["layers.0.mlp.up_proj.weight"]
    state["layers.0.extra.weight"] = torch.zeros(3)
    state["fc.weight"] = torch.zeros(H, H)
    with pytest.raises(HeadCheckpointError) as err:
        load_head(write(tmp_path, config(), state), parts)
    message = str(err.value)
    assert "layers.0.mlp.up_proj.weight" in message
    assert "layers.0.extra.weight" in message
    assert "fc.weight" in message


def test_fc_bias_must_match_the_config(tmp_path, parts):
    with pytest.raises(HeadCheckpointError, match=r"fc\.bias"):
        load_head(write(tmp_path, config(bias=False), eagle1_state(bias=True)), parts)


def test_unknown_format_is_refused(tmp_path, parts):
    with pytest.raises(HeadCheckpointError, match="unknown head format"):
        load_head(write(tmp_path, config(), {"w": torch.zeros(2)}), parts)


def test_eagle3_config_with_eagle1_weights_is_refused(tmp_path, parts):
    with pytest.raises(HeadCheckpointError, match="draft_vocab_size"):
        load_head(write(tmp_path, config(eagle3=True), eagle1_state()), parts)


def test_old_rotary_buffers_are_tolerated(tmp_path, parts):
    state = eagle1_state() | {"layers.0.self_attn.rotary_emb.inv_freq": torch.ones(HEAD_DIM // 2)}
    assert load_head(write(tmp_path, config(), state), parts).variant == "eagle1"


def test_the_head_derives_float32_rope_frequencies_whatever_its_dtype(tmp_path, parts):
    state = eagle1_state() | {"layers.0.self_attn.rotary_emb.inv_freq": torch.ones(HEAD_DIM // 2)}
    head = load_head(write(tmp_path, config(), state), parts, dtype=torch.bfloat16)
    theta = head.config.rope_theta
    expected = (
        1.0 / theta ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM)
    ).float()
    assert torch.equal(head.rotary.inv_freq, expected)  # float32, not the saved ones
    assert torch.equal(head.half().rotary.inv_freq, expected)  # casts do not round them
    with torch.device("meta"):
        rotary = Rotary(head.config)
    assert torch.equal(rotary.to_empty(device="cpu").inv_freq, expected)


def test_head_for_another_vocabulary_is_refused(tmp_path, parts):
    state = eagle1_state()
    state["embed_tokens.weight"] = torch.zeros(VOCAB + 4, H)
    with pytest.raises(HeadCheckpointError, match="vocab"):
        load_head(write(tmp_path, config(vocab_size=VOCAB + 4), state), parts)


def test_missing_weights_file_and_directory(tmp_path, parts):
    (tmp_path / "config.json").write_text(json.dumps(config()))
    with pytest.raises(HeadCheckpointError, match=r"model\.safetensors"):
        load_head(tmp_path, parts)
    with pytest.raises(HeadCheckpointError, match="is a file"):
        load_head(tmp_path / "config.json", parts)


def test_eagle3_draft_ids_map_to_target_ids(tmp_path, parts):
    head = load_head(write(tmp_path, config(eagle3=True), eagle3_state()), parts)
    assert head.draft_to_target(torch.tensor([0, 1, 5])).tolist() == [0, 2, 10]


# -- bad input: every config.json field, every tensor, the files themselves -------------------

_NAN = float("nan")
BAD_CONFIG_FIELDS = [
    # (field named in the error, eagle3?, config overrides)
    ("hidden_size", False, {"hidden_size": "32"}),
    ("hidden_size", False, {"hidden_size": 32.0}),
    ("hidden_size", False, {"hidden_size": True}),
    ("hidden_size", False, {"hidden_size": None, "num_attention_heads": 4}),  # required
    ("intermediate_size", False, {"intermediate_size": 0}),
    ("intermediate_size", False, {"intermediate_size": [64]}),
    ("num_attention_heads", False, {"num_attention_heads": -4}),
    ("num_attention_heads", False, {"num_attention_heads": 5, "num_key_value_heads": 1}),
    ("num_key_value_heads", False, {"num_key_value_heads": 3}),
    ("num_key_value_heads", False, {"num_key_value_heads": "2"}),
    ("vocab_size", False, {"vocab_size": "96"}),
    ("num_hidden_layers", False, {"num_hidden_layers": 0}),
    ("num_hidden_layers", True, {"num_hidden_layers": 2}),
    ("rms_norm_eps", False, {"rms_norm_eps": -1e-6}),
    ("rms_norm_eps", False, {"rms_norm_eps": _NAN}),
    ("rms_norm_eps", False, {"rms_norm_eps": "1e-6"}),
    ("hidden_act", False, {"hidden_act": "tanh"}),
    ("hidden_act", False, {"hidden_act": 3}),
    ("max_position_embeddings", False, {"max_position_embeddings": 2048.5}),
    ("rope_theta", False, {"rope_theta": 0}),
    ("rope_theta", False, {"rope_theta": "10000"}),
    ("rope_scaling", False, {"rope_scaling": "linear"}),
    ("rope_scaling", False, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
    ("rope_scaling", False, {"rope_scaling": {"type": "linear"}}),
    ("rope_scaling", False, {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
    ("rope_parameters", False, {"rope_parameters": "default"}),
    ("head_dim", False, {"head_dim": "8"}),
    ("head_dim", False, {"head_dim": 7}),  # rotary embeddings need an even head dimension
    ("bias", False, {"bias": "yes"}),
    ("qkv_bias", False, {"qkv_bias": 1}),
    ("draft_vocab_size", True, {"draft_vocab_size": 0}),
    ("draft_vocab_size", True, {"draft_vocab_size": "40"}),
    ("draft_vocab_size", True, {"draft_vocab_size": VOCAB + 1}),
    ("target_hidden_size", True, {"target_hidden_size": -32}),
    ("eagle_config", True, {"eagle_config": "layers 1 2 3"}),
    (
        "eagle_aux_hidden_state_layer_ids",
        True,
        {"eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 2]}},
    ),
    (
        "eagle_aux_hidden_state_layer_ids",
        True,
        {"eagle_config": {"eagle_aux_hidden_state_layer_ids": ["1", 2, 3]}},
    ),
]


@pytest.mark.parametrize(
    ("field", "eagle3", "overrides"),
    BAD_CONFIG_FIELDS,
    ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_CONFIG_FIELDS)],
)
def test_bad_config_fields_name_the_file_and_the_field(tmp_path, parts, field, eagle3, overrides):
    cfg = {k: v for k, v in (config(eagle3) | overrides).items() if v is not None}
    state = eagle3_state() if eagle3 else eagle1_state()
    with pytest.raises(HeadCheckpointError) as err:
        load_head(write(tmp_path, cfg, state), parts)
    assert str(tmp_path / "config.json") in str(err.value)
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"hidden_size": 32,', "not valid JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('"a config"', "JSON object"),
        ("32", "JSON object"),
        (b"\xff\xfe\x00", "cannot read"),
    ],
    ids=["truncated", "list", "string", "number", "not-utf8"],
)
def test_config_json_that_is_not_an_object_names_the_file(tmp_path, parts, text, expected):
    write(tmp_path, config(), eagle1_state())
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(HeadCheckpointError, match=expected) as err:
        load_head(tmp_path, parts)
    assert str(path) in str(err.value)


def _bad_d2t(kind: str) -> dict:
    state = eagle3_state()
    if kind == "d2t-above-vocab":
        state["d2t"][DRAFT_VOCAB - 1] = VOCAB
    elif kind == "d2t-negative":
        state["d2t"][0] = -1
    elif kind == "d2t-duplicate":
        state["d2t"][1] = -1  # draft ids 0 and 1 both map to target id 0
    elif kind == "d2t-float":
        state["d2t"] = state["d2t"].float()
    elif kind == "d2t-shape":
        state["d2t"] = state["d2t"][:-1]
    elif kind == "t2d-disagrees":
        state["t2d"][1] = True  # target id 1 is not in the draft vocabulary
    elif kind == "t2d-not-a-mask":
        state["t2d"] = state["t2d"].long() * 2
    elif kind == "t2d-missing":
        del state["t2d"]
    return state


BAD_TENSORS = [
    ("d2t", eagle3_state, "d2t-above-vocab"),
    ("d2t", eagle3_state, "d2t-negative"),
    ("d2t", eagle3_state, "d2t-duplicate"),
    ("d2t", eagle3_state, "d2t-float"),
    ("d2t", eagle3_state, "d2t-shape"),
    ("t2d", eagle3_state, "t2d-disagrees"),
    ("t2d", eagle3_state, "t2d-not-a-mask"),
    ("t2d", eagle3_state, "t2d-missing"),
    ("fc.weight", eagle1_state, "int-weight"),
    ("layers.0.mlp.up_proj.weight", eagle1_state, "nan-weight"),
    ("norm.weight", eagle3_state, "inf-weight"),
]


@pytest.mark.parametrize(("key", "base", "kind"), BAD_TENSORS, ids=[k for _, _, k in BAD_TENSORS])
def test_bad_tensors_name_the_weights_file_and_the_tensor(tmp_path, parts, key, base, kind):
    eagle3 = base is eagle3_state
    state = _bad_d2t(kind) if eagle3 and kind.startswith(("d2t", "t2d")) else base()
    if kind == "int-weight":
        state[key] = state[key].long()
    elif kind in ("nan-weight", "inf-weight"):
        state[key][0] = float("nan") if kind == "nan-weight" else float("inf")
    with pytest.raises(HeadCheckpointError) as err:
        load_head(write(tmp_path, config(eagle3), state), parts)
    assert str(tmp_path / "model.safetensors") in str(err.value)
    assert key in str(err.value)


def test_full_draft_vocabulary_maps_must_be_absent_or_the_identity(tmp_path, parts):
    state = eagle3_state()
    state["lm_head.weight"] = torch.randn(VOCAB, H) * 0.1
    state["d2t"] = torch.zeros(VOCAB, dtype=torch.long)
    state["t2d"] = torch.ones(VOCAB, dtype=torch.bool)
    cfg = config(eagle3=True, draft_vocab_size=VOCAB)
    head = load_head(write(tmp_path / "identity", cfg, state), parts)
    assert not head.reduced_vocab and "d2t" not in head.state_dict()
    state["d2t"][3] = 1
    with pytest.raises(HeadCheckpointError, match="identity"):
        load_head(write(tmp_path / "shifted", cfg, state), parts)


@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "bin"])
def test_unreadable_weights_name_the_file(tmp_path, parts, safetensors):
    write(tmp_path, config(), eagle1_state(), safetensors)
    path = tmp_path / ("model.safetensors" if safetensors else "pytorch_model.bin")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(HeadCheckpointError, match="cannot read") as err:
        load_head(tmp_path, parts)
    assert str(path) in str(err.value)
    path.unlink()
    torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(HeadCheckpointError, match="mapping of parameter names"):
        load_head(tmp_path, parts)


def test_use_eagle3_must_be_a_bool_or_none(tmp_path, parts):
    with pytest.raises(ValueError, match="use_eagle3"):
        load_head(write(tmp_path, config(), eagle1_state()), parts, use_eagle3="yes")


def test_transformers5_rope_parameters_are_read(tmp_path, parts):
    llama3 = {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 1024,
    }  # fmt: skip
    cfg = {k: v for k, v in config(rope_parameters=llama3).items() if k != "rope_theta"}
    head = load_head(write(tmp_path, cfg, eagle1_state()), parts)
    assert head.config.rope_theta == 500000.0
    assert head.config.rope_scaling["rope_type"] == "llama3"
