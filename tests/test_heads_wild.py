"""Heads from the wild: every published head family loads and decodes like greedy, or is refused.

One case per row of the README table "Heads from the wild". Each state dict is written out by
hand with exactly the keys the family publishes (shapes scaled down to the tiny test targets),
next to a config.json with the family's fields. A family that loads must decode equal to
plain greedy decoding in fp32; a refused family must say what is unsupported.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import (
    HIDDEN,
    VOCAB,
    eagle1_state,
    eagle3_keys,
    greedy_sequences,
    make_target,
)
from helpers import (
    write_head_dir as write,
)

from eagle.model.checkpoint import HeadCheckpointError, load_head, save_head
from eagle.model.draft import DynamicTree
from eagle.model.draft_head import TargetParts
from eagle.model.ea_model import EaModel

H, FFN, HEADS, KV_HEADS, HEAD_DIM, DRAFT_VOCAB = HIDDEN, 64, 4, 2, 8, 40


def eagle1_keys(embedding: bool = True) -> dict[str, torch.Tensor]:
    """SafeAILab/EAGLE eagle/model/cnets1.py Model: embed_tokens, fc (bias), layers.N."""
    return eagle1_state(FFN, KV_HEADS * HEAD_DIM, embedding=embedding)


def llama_fields(**extra) -> dict:
    """The Llama config.json fields every family writes (values scaled to the tiny target)."""
    return {
        "hidden_size": H,
        "intermediate_size": FFN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": 1,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "model_type": "llama",
        "torch_dtype": "float16",
    } | extra


def specforge_config(**extra) -> dict:
    """SpecForge configs/llama4-scout-17B-16E-eagle3.json, scaled down."""
    return (
        llama_fields(
            architectures=["LlamaForCausalLMEagle3"],
            draft_vocab_size=DRAFT_VOCAB,
            pad_token_id=0,
            tie_word_embeddings=False,
            initializer_range=0.02,
            use_cache=True,
            transformers_version="4.52.3",
        )
        | extra
    )


def speculators_config(layer_fields: dict, **top) -> dict:
    """vllm-project/speculators Eagle3SpeculatorConfig: the layer's fields nested."""
    return {
        "architectures": ["Eagle3Speculator"],
        "speculators_model_type": "eagle3",
        "transformer_layer_config": layer_fields,
        "draft_vocab_size": DRAFT_VOCAB,
        "norm_before_residual": False,
        "target_hidden_size": None,
        "speculators_config": {"algorithm": "eagle3", "default_proposal_method": "greedy"},
    } | top


_TARGETS = {}


def _target(arch: str):
    if arch not in _TARGETS:
        _TARGETS[arch] = make_target(arch)
    return _TARGETS[arch]


def decodes_like_greedy(head, target) -> None:
    """fp32 EAGLE decoding with the loaded head must equal plain greedy decoding."""
    model = EaModel(target, head, tree=DynamicTree(total_token=10, depth=3, top_k=3), eos_ids=set())
    prompt = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        model.eagenerate(prompt, max_new_tokens=16), greedy_sequences(target, prompt, 16)
    )


def _load(tmp_path, arch, cfg, state, safetensors=True):
    target = _target(arch)
    parts = TargetParts(target.embed_tokens, target.lm_head)
    return load_head(write(tmp_path, cfg, state, safetensors), parts, dtype=torch.float32), target


# a head half as wide as the tiny target: the fields and the matching key shapes
NARROW = dict(
    hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
    target_hidden_size=H,
)  # fmt: skip
NARROW_KEYS = dict(width=16, heads=2, kv_heads=1, ffn=32)

# -- families that load -----------------------------------------------------------------------

# name -> (target architecture, config.json, state dict, weights file is safetensors)
LOADS = {
    # yuhuili/EAGLE-Vicuna-7B-v1.3, EAGLE-llama2-chat-7B, EAGLE-LLaMA3-Instruct-8B
    "eagle1-original": (
        "llama",
        llama_fields(architectures=["LlamaForCausalLM"]),
        eagle1_keys(),
        False,
    ),
    # yuhuili/EAGLE3-LLaMA3.1-Instruct-8B, EAGLE3-DeepSeek-R1-Distill-LLaMA-8B
    "eagle3-original-reduced-vocab": (
        "llama",
        llama_fields(architectures=["LlamaForCausalLMEagle3"], draft_vocab_size=DRAFT_VOCAB),
        eagle3_keys(),
        False,
    ),
    # yuhuili/EAGLE3-Vicuna1.3-13B: draft_vocab_size == vocab_size, identity d2t/t2d saved
    **{
        f"eagle3-full-vocab-identity-maps-{fmt}": (
            "llama",
            llama_fields(architectures=["LlamaForCausalLMEagle3"], draft_vocab_size=VOCAB),
            eagle3_keys(draft_vocab=VOCAB),
            fmt == "safetensors",
        )
        for fmt in ("safetensors", "bin")
    },
    # lmsys/sglang-EAGLE3-LLaMA3.1-Instruct-8B, SpecForge Llama-3 / Llama-4 heads: no embedding
    "specforge-llama": ("llama", specforge_config(), eagle3_keys(), True),
    # SpecForge configs/qwen3-4b-eagle3.json: head_dim * heads != hidden_size, the target's
    # tie_word_embeddings copied into the head config (the head keeps its own lm_head)
    "specforge-qwen3": (
        "qwen3",
        specforge_config(head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0),
        eagle3_keys(head_dim=16),
        True,
    ),
    # AngelSlim/Qwen3-*_eagle3 (Tencent/AngelSlim train/configs/qwen3-4b-eagle3.json)
    "angelslim-qwen3": (
        "qwen3",
        llama_fields(
            architectures=["Eagle3LlamaForCausalLM"],
            draft_vocab_size=DRAFT_VOCAB,
            head_dim=16,
            tie_word_embeddings=True,
            attention_bias=False,
            rope_theta=1000000,
            rope_scaling=None,
        ),
        eagle3_keys(head_dim=16, embedding=True),
        True,
    ),
    # the EAGLE-3 layer saved as layers.0 (speculators' naming, vLLM's internal one)
    "eagle3-layers0": ("llama", specforge_config(), eagle3_keys(layer="layers.0."), True),
    # vllm-project/speculators Eagle3Speculator with norm_before_residual false
    "speculators-eagle3": (
        "llama",
        speculators_config(
            llama_fields(architectures=["LlamaForCausalLM"]),
            eagle_aux_hidden_state_layer_ids=[1, 1, 0],
        ),
        eagle3_keys(layer="layers.0.", embedding=True),
        True,
    ),
    # a head narrower than its target (target_hidden_size) that ships its own embedding
    "eagle3-narrow-with-embedding": (
        "llama",
        specforge_config(**NARROW),
        eagle3_keys(**NARROW_KEYS, embedding=True),
        True,
    ),
}


@pytest.mark.parametrize("family", list(LOADS))
def test_published_family_loads_and_decodes_like_greedy(tmp_path, family):
    arch, cfg, state, safetensors = LOADS[family]
    head, target = _load(tmp_path, arch, cfg, state, safetensors)
    loaded = head.state_dict()
    renamed = {
        k.replace("layers.0.", "midlayer.") if head.variant == "eagle3" else k: v
        for k, v in state.items()
    }
    full_vocab = head.variant == "eagle3" and head.config.draft_vocab == VOCAB
    for key, value in renamed.items():
        if full_vocab and key in ("d2t", "t2d"):
            continue  # identity maps are checked and dropped
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key
    decodes_like_greedy(head, target)


def test_speculators_head_is_saved_again_in_the_flat_format(tmp_path):
    _, cfg, state, _ = LOADS["speculators-eagle3"]
    head, target = _load(tmp_path / "in", "llama", cfg, state)
    assert head.config.feature_layers == (2, 2, 1)  # same numbering as eagle_config
    saved = json.loads((save_head(head, tmp_path / "out") / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLMEagle3"]
    assert "transformer_layer_config" not in saved and "speculators_model_type" not in saved
    assert saved["eagle_config"] == {"eagle_aux_hidden_state_layer_ids": [1, 1, 0]}
    again = load_head(tmp_path / "out", TargetParts(target.embed_tokens, target.lm_head))
    assert again.state_dict().keys() == head.state_dict().keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in head.state_dict().items())


# -- families that are refused, and why --------------------------------------------------------

REFUSED = {
    # no own embedding: the target's embedding has the target's width
    "eagle3-narrow-without-embedding": (
        specforge_config(**NARROW),
        eagle3_keys(**NARROW_KEYS),
        "own embed_tokens.weight",
    ),
    # RedHatAI speculators heads trained with norm_before_residual
    "speculators-norm-before-residual": (
        speculators_config(llama_fields(), norm_before_residual=True),
        eagle3_keys(layer="layers.0.", embedding=True),
        "norm_before_residual",
    ),
    # speculators Eagle3DraftModel.input_norm (gpt-oss recipe)
    "speculators-norm-before-fc": (
        speculators_config(llama_fields(), norm_before_fc=True),
        eagle3_keys(layer="layers.0.") | {"input_norm.weight": torch.ones(3 * H)},
        "norm_before_fc",
    ),
    # SpecForge configs/qwen3-30B-A3B-eagle3.1.json
    "specforge-eagle3.1-fc-norm": (
        specforge_config(fc_norm=True, norm_output=True),
        eagle3_keys(),
        "fc_norm",
    ),
    "norm-output": (specforge_config(norm_output=True), eagle3_keys(), "norm_output"),
    # the first speculators Eagle3Speculator: fc with bias
    "speculators-v0-fc-bias": (
        speculators_config(llama_fields()),
        eagle3_keys(layer="layers.0.", embedding=True) | {"fc.bias": torch.zeros(H)},
        "fc.bias",
    ),
    # vLLM / SGLang multi-layer EAGLE-3 (num_hidden_layers 2)
    "eagle3-two-layers": (
        specforge_config(num_hidden_layers=2),
        eagle3_keys(layer="layers.0.")
        | {
            k.replace("layers.0.", "layers.1."): v
            for k, v in eagle1_keys().items()
            if "layers.0." in k
        },
        "layers.1",
    ),
}


@pytest.mark.parametrize("family", list(REFUSED))
def test_unsupported_family_is_refused_with_the_reason(tmp_path, family):
    cfg, state, named = REFUSED[family]
    with pytest.raises(HeadCheckpointError) as err:
        _load(tmp_path, "llama", cfg, state)
    message = str(err.value)
    assert named in message and str(tmp_path) in message
    if "narrow" not in family:
        assert "architecture change" in message


@pytest.mark.parametrize(
    ("key", "change", "named"),
    [
        ("d2t", lambda m: m.index_fill(0, torch.tensor([3]), 1), "'d2t' is not the identity map"),
        ("t2d", lambda m: m.index_fill(0, torch.tensor([5]), False), "'t2d' is not the identity"),
        ("t2d", lambda m: m[:-1], "'t2d' has shape (95,)"),
        ("d2t", lambda m: m.float(), "'d2t' holds torch.float32"),
    ],
    ids=["d2t-shifted", "t2d-hole", "t2d-short", "d2t-float"],
)
@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "bin"])
def test_full_vocab_maps_that_are_not_the_identity_are_refused(
    tmp_path, key, change, named, safetensors
):
    cfg = llama_fields(architectures=["LlamaForCausalLMEagle3"], draft_vocab_size=VOCAB)
    state = eagle3_keys(draft_vocab=VOCAB)
    state[key] = change(state[key])
    with pytest.raises(HeadCheckpointError, match="full draft vocabulary") as err:
        _load(tmp_path, "llama", cfg, state, safetensors)
    assert named in str(err.value)
