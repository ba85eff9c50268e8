"""Head checkpoints: the published key names and shapes load, round-trip, and bad ones fail loudly.

The state dicts here are written out by hand from the published formats (spec section 4), not
produced by the code under test.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import HIDDEN, VOCAB, make_target

from eagle.model.checkpoint import HeadCheckpointError, load_head, save_head
from eagle.model.draft_head import TargetParts

H, FFN, KV_HEADS, HEAD_DIM, DRAFT_VOCAB = HIDDEN, 64, 2, 8, 40
KV = KV_HEADS * HEAD_DIM


def eagle1_state(bias: bool = True, qkv_bias: bool = False, embedding: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    shapes = {
        "fc.weight": (H, 2 * H),
        "layers.0.self_attn.q_proj.weight": (H, H),
        "layers.0.self_attn.k_proj.weight": (KV, H),
        "layers.0.self_attn.v_proj.weight": (KV, H),
        "layers.0.self_attn.o_proj.weight": (H, H),
        "layers.0.mlp.gate_proj.weight": (FFN, H),
        "layers.0.mlp.up_proj.weight": (FFN, H),
        "layers.0.mlp.down_proj.weight": (H, FFN),
        "layers.0.post_attention_layernorm.weight": (H,),
    }
    if embedding:
        shapes["embed_tokens.weight"] = (VOCAB, H)
    if bias:
        shapes["fc.bias"] = (H,)
    if qkv_bias:
        shapes |= {
            "layers.0.self_attn.q_proj.bias": (H,),
            "layers.0.self_attn.k_proj.bias": (KV,),
            "layers.0.self_attn.v_proj.bias": (KV,),
        }
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}


def eagle3_state() -> dict:
    g = torch.Generator().manual_seed(1)
    shapes = {
        "fc.weight": (H, 3 * H),
        "midlayer.hidden_norm.weight": (H,),
        "midlayer.input_layernorm.weight": (H,),
        "midlayer.self_attn.q_proj.weight": (H, 2 * H),
        "midlayer.self_attn.k_proj.weight": (KV, 2 * H),
        "midlayer.self_attn.v_proj.weight": (KV, 2 * H),
        "midlayer.self_attn.o_proj.weight": (H, H),
        "midlayer.mlp.gate_proj.weight": (FFN, H),
        "midlayer.mlp.up_proj.weight": (FFN, H),
        "midlayer.mlp.down_proj.weight": (H, FFN),
        "midlayer.post_attention_layernorm.weight": (H,),
        "norm.weight": (H,),
        "lm_head.weight": (DRAFT_VOCAB, H),
    }
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
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


def write(directory, cfg: dict, state: dict, safetensors: bool = True):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, directory / "model.safetensors")
    else:
        torch.save(state, directory / "pytorch_model.bin")
    return directory


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
