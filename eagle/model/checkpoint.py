"""Draft-head checkpoints in the two published formats: detect, load strictly, save.

A head directory holds ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``.
The variant is read from the weights (EAGLE-3 has ``midlayer.*`` keys, EAGLE-1 ``layers.*``) and
must agree with the config (``draft_vocab_size`` marks EAGLE-3) and with ``use_eagle3`` when the
caller gives it. Loading is strict: the expected key set and shapes follow from the config, and
any missing, unexpected or mis-shaped key is an error that names it. The only keys tolerated
beyond the parameters are RoPE ``inv_freq`` buffers that old transformers versions saved (they
are derived from the config and ignored).

``embed_tokens.weight`` may be absent from either format; the head then uses the target's
embedding. ``d2t``/``t2d`` may be absent only when the draft vocabulary equals the target's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eagle.model.draft_head import DraftHead, HeadConfig, Rotary, TargetParts, build_head

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
EAGLE3_ARCHITECTURE = "LlamaForCausalLMEagle3"
_KNOWN_FIELDS = {
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "num_hidden_layers",
    "rms_norm_eps",
    "hidden_act",
    "max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "head_dim",
    "bias",
    "qkv_bias",
    "draft_vocab_size",
    "target_hidden_size",
}


class HeadCheckpointError(ValueError):
    """A head directory that does not match a published format."""


def resolve_head_dir(path: str | os.PathLike) -> Path:
    """A local directory, or a hub repository id downloaded to the local cache."""
    local = Path(path)
    if local.is_dir():
        return local
    if local.exists():
        raise HeadCheckpointError(
            f"ea_model_path {str(path)!r} is a file; give the head's directory"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "*.bin"])
        )
    except Exception as err:
        raise HeadCheckpointError(
            f"ea_model_path {str(path)!r} is neither a local directory nor a reachable hub repo: {err}"
        ) from err


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    if (directory / SAFETENSORS_FILE).exists():
        from safetensors.torch import load_file

        return load_file(directory / SAFETENSORS_FILE)
    if (directory / TORCH_FILE).exists():
        return torch.load(directory / TORCH_FILE, map_location="cpu", weights_only=True)
    raise HeadCheckpointError(
        f"no weights in {directory}: expected {SAFETENSORS_FILE} or {TORCH_FILE}"
    )


def detect_variant(raw_config: dict[str, Any], state: dict[str, Tensor]) -> str:
    """'eagle1' or 'eagle3' from the weights, checked against the config."""
    has_mid = any(k.startswith("midlayer.") for k in state)
    has_layers = any(k.startswith("layers.") for k in state)
    if has_mid == has_layers:
        raise HeadCheckpointError(
            "unknown head format: expected either 'midlayer.*' keys (EAGLE-3) or 'layers.*' keys "
            f"(EAGLE-1), found {'both' if has_mid else 'neither'}; keys: {sorted(state)[:12]}"
        )
    variant = "eagle3" if has_mid else "eagle1"
    if variant == "eagle1" and "draft_vocab_size" in raw_config:
        raise HeadCheckpointError(
            "config.json has draft_vocab_size (EAGLE-3) but the weights are an EAGLE-1 head"
        )
    return variant


def parse_config(raw: dict[str, Any], variant: str) -> HeadConfig:
    fields = {k: v for k, v in raw.items() if k in _KNOWN_FIELDS and v is not None}
    fields.setdefault("num_key_value_heads", fields.get("num_attention_heads"))
    if "rope_theta" not in fields and isinstance(raw.get("rope_parameters"), dict):
        fields["rope_theta"] = raw["rope_parameters"].get("rope_theta", 10000.0)
    missing = {"hidden_size", "intermediate_size", "num_attention_heads", "vocab_size"} - set(
        fields
    )
    if missing:
        raise HeadCheckpointError(f"config.json lacks required fields: {sorted(missing)}")
    aux = (raw.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
    # engines count layer outputs; hidden_states index i is the input of layer i = output of i-1
    layers = tuple(int(i) + 1 for i in aux) if aux else None
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_FIELDS}
    return HeadConfig(variant=variant, feature_layers=layers, extra=extra, **fields)


def expected_shapes(head: DraftHead) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published format for this head (embedding optional, not listed)."""
    return {k: tuple(v.shape) for k, v in head.state_dict().items() if k != "embed_tokens.weight"}


def check_state_dict(head: DraftHead, state: dict[str, Tensor]) -> None:
    """Raise HeadCheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = expected_shapes(head)
    given = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if "embed_tokens.weight" in given:
        expected["embed_tokens.weight"] = (head.config.vocab_size, head.config.hidden_size)
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {given[k]} vs expected {expected[k]}"
        for k in set(given) & set(expected)
        if given[k] != expected[k]
    )
    if missing or unexpected or wrong:
        parts = [
            f"missing keys: {missing}" if missing else "",
            f"unexpected keys: {unexpected}" if unexpected else "",
            f"wrong shapes: {wrong}" if wrong else "",
        ]
        raise HeadCheckpointError(
            f"{head.variant} head checkpoint does not match its config.json: "
            + "; ".join(p for p in parts if p)
        )


def load_head(
    path: str | os.PathLike,
    target: TargetParts,
    use_eagle3: bool | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DraftHead:
    """Load a head directory strictly; ``use_eagle3`` (if given) must match the detected variant."""
    directory = resolve_head_dir(path)
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        raise HeadCheckpointError(f"no {CONFIG_FILE} in {directory}")
    raw = json.loads(config_path.read_text())
    state = read_state_dict(directory)
    variant = detect_variant(raw, state)
    if use_eagle3 is not None and use_eagle3 != (variant == "eagle3"):
        raise HeadCheckpointError(
            f"use_eagle3={use_eagle3} but {directory} holds an {variant.upper()} head; "
            "leave use_eagle3=None to detect the variant"
        )
    config = parse_config(raw, variant)
    has_embedding = "embed_tokens.weight" in state
    with torch.device("meta"):
        head = build_head(config, target, own_embedding=has_embedding)
    check_state_dict(head, state)
    _check_target_fit(config, target)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    head.load_state_dict(state, strict=True, assign=True)
    head.rotary = Rotary(config)  # derived buffer, not in the checkpoint
    # .to(dtype) casts floating tensors only: d2t (int64) and t2d (bool) keep their types
    return head.to(device=device or "cpu", dtype=dtype).eval()


def _check_target_fit(config: HeadConfig, target: TargetParts) -> None:
    vocab, width = target.embed_tokens.weight.shape
    if config.vocab_size != vocab:
        raise HeadCheckpointError(
            f"head vocab_size {config.vocab_size} does not match the target's vocabulary {vocab}"
        )
    target_width = config.target_hidden_size or config.hidden_size
    if config.variant == "eagle3" and target_width != width:
        raise HeadCheckpointError(
            f"EAGLE-3 head expects target hidden size {target_width}, the target has {width}"
        )
    if config.variant == "eagle1" and config.hidden_size != width:
        raise HeadCheckpointError(
            f"EAGLE-1 head hidden_size {config.hidden_size} does not match the target's {width}"
        )


def head_config_json(config: HeadConfig) -> dict[str, Any]:
    """config.json content in the published format of the head's variant."""
    out = dict(config.extra)
    out.update({k: v for k, v in config.to_dict().items() if k in _KNOWN_FIELDS and v is not None})
    out.setdefault("model_type", "llama")
    if config.variant == "eagle3":
        out["architectures"] = [EAGLE3_ARCHITECTURE]
        out.pop("bias", None)
        out["draft_vocab_size"] = config.draft_vocab
        if config.feature_layers is not None:
            ids = [i - 1 for i in config.feature_layers]
            out["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": ids}
    else:
        out.setdefault("architectures", ["LlamaForCausalLM"])
        out.pop("draft_vocab_size", None)
        out.pop("target_hidden_size", None)
    return out


def save_head(
    head: DraftHead, directory: str | os.PathLike, safe_serialization: bool = True
) -> Path:
    """Write config.json and the weights in the published format of the head's variant."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(head_config_json(head.config), indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, directory / SAFETENSORS_FILE)
    else:
        torch.save(state, directory / TORCH_FILE)
    return directory
