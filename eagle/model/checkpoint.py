"""Draft-head checkpoints in the two published formats: detect, load strictly, save.

A head directory holds ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``.
The variant is read from the weights (EAGLE-3 has ``midlayer.*`` keys, EAGLE-1 ``layers.*``) and
must agree with the config (``draft_vocab_size`` marks EAGLE-3) and with ``use_eagle3`` when the
caller gives it. Loading is strict: the expected key set and shapes follow from the config, and
any missing, unexpected or mis-shaped key is an error that names it. The only keys tolerated
beyond the parameters are RoPE ``inv_freq`` buffers that old transformers versions saved (they
are derived from the config and ignored).

Heads published by other trainers (SpecForge, AngelSlim, vllm-project/speculators) are first
brought into these two layouts by ``head_formats.normalise`` (key renames and nested configs as
data), which also refuses, with the reason, the families whose computation the head lacks; the
survey of families is the README section "Heads from the wild".

``embed_tokens.weight`` may be absent from either format; the head then uses the target's
embedding (an EAGLE-3 head narrower than its target must bring its own). ``d2t``/``t2d`` may be
absent only when the draft vocabulary equals the target's; then, if present (the original
trainer, SpecForge and AngelSlim always save them), each must be the identity map, and one that
is not is refused by name.

Heads are written so that vLLM and SGLang serve them as trained: an EAGLE-3 head names its
target layers in the two config fields those engines read, each in its own numbering
(``feature_layers_of``), and an EAGLE-1 head without an ``fc`` bias carries a zero one
(``serving_state_dict``). The engine facts, with their sources, are beside that code and in the
README section "Serving a head with vLLM or SGLang".

Every problem is a ``HeadCheckpointError`` that names the file and, for config.json, the field:
unreadable or non-object JSON, a field of the wrong type or range (``draft_head.FIELD_RULES``
and the relations between fields), weights that are not floating point or not finite, and a
``d2t`` table that maps outside the target vocabulary or disagrees with ``t2d``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eagle.model import head_formats
from eagle.model.draft_head import (
    DraftHead,
    HeadConfig,
    HeadFieldError,
    TargetParts,
    Variant,
    build_head,
    check_head_fields,
    weight_of,
)

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


# Keywords of from_pretrained that say how to reach the hub; the head's download takes these
# (not revision, which names a commit of the target's repository, nor trust_remote_code).
HEAD_HUB_KWARGS = ("token", "cache_dir", "local_files_only", "force_download", "proxies")


def resolve_head_dir(path: str | os.PathLike, hub: Mapping[str, Any] | None = None) -> Path:
    """A local directory, or a hub repository id downloaded to the local cache; ``hub`` holds
    ``HEAD_HUB_KWARGS`` for the download (a token, a cache folder, offline mode)."""
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
            snapshot_download(
                str(path),
                allow_patterns=["*.json", "*.safetensors", "*.bin"],
                **{k: v for k, v in (hub or {}).items() if k in HEAD_HUB_KWARGS},
            )
        )
    except Exception as err:
        raise HeadCheckpointError(
            f"ea_model_path {str(path)!r} is neither a local directory nor a reachable hub repo: {err}"
        ) from err


def weights_file(directory: Path) -> Path:
    """The head's weights file: model.safetensors, else pytorch_model.bin."""
    for name in (SAFETENSORS_FILE, TORCH_FILE):
        if (directory / name).exists():
            return directory / name
    raise HeadCheckpointError(
        f"no weights in {directory}: expected {SAFETENSORS_FILE} or {TORCH_FILE}"
    )


def read_state_dict(directory: Path) -> dict[str, Tensor]:
    """The tensors of the head's weights file; an unreadable file is an error naming it."""
    path = weights_file(directory)
    try:
        if path.name == SAFETENSORS_FILE:
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, pickle and OS errors alike: name the file
        raise HeadCheckpointError(f"cannot read the head weights {path}: {err}") from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise HeadCheckpointError(f"{path} must hold a flat mapping of parameter names to tensors")
    return state


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict; invalid JSON or another JSON type is an error naming the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise HeadCheckpointError(
            f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise HeadCheckpointError(f"cannot read {path}: {err}") from err
    if not isinstance(raw, dict):
        raise HeadCheckpointError(
            f"{path} must hold a JSON object of config fields, got a JSON {type(raw).__name__}"
        )
    return raw


def detect_variant(
    raw_config: dict[str, Any], state: dict[str, Tensor], source: str | os.PathLike = "the head"
) -> Variant:
    """'eagle1' or 'eagle3' from the weights, checked against the config."""
    has_mid = any(k.startswith("midlayer.") for k in state)
    has_layers = any(k.startswith("layers.") for k in state)
    if has_mid == has_layers:
        raise HeadCheckpointError(
            f"{source}: unknown head format: expected either 'midlayer.*' keys (EAGLE-3) or "
            f"'layers.*' keys (EAGLE-1), found {'both' if has_mid else 'neither'}; keys: {sorted(state)[:12]}"
        )
    variant: Variant = "eagle3" if has_mid else "eagle1"
    if variant == "eagle1" and head_formats.names_eagle3(raw_config):
        raise HeadCheckpointError(
            f"{source}: config.json names an EAGLE-3 head (draft_vocab_size or architectures "
            f"{raw_config.get('architectures')}) but the weights are an EAGLE-1 head"
        )
    return variant


def parse_config(
    raw: dict[str, Any], variant: Variant, source: str | os.PathLike = CONFIG_FILE
) -> HeadConfig:
    """The head config of a config.json dict; ``source`` (the file) is named in errors."""
    fields = {k: v for k, v in raw.items() if k in _KNOWN_FIELDS and v is not None}
    fields.setdefault("num_key_value_heads", fields.get("num_attention_heads"))
    _adopt_rope_parameters(raw.get("rope_parameters"), fields, source)
    missing = {"hidden_size", "intermediate_size", "num_attention_heads", "vocab_size"} - set(
        fields
    )
    if missing:
        raise HeadCheckpointError(f"{source} lacks required fields: {sorted(missing)}")
    try:
        check_head_fields(fields, variant)
    except HeadFieldError as err:
        raise HeadCheckpointError(f"{source}: field {err.field!r} {err.problem}") from None
    head_dim = fields.get("head_dim") or fields["hidden_size"] // fields["num_attention_heads"]
    if head_dim % 2:
        raise HeadCheckpointError(
            f"{source}: field 'head_dim' (or hidden_size / num_attention_heads) is {head_dim}; "
            "rotary embeddings need an even head dimension"
        )
    layers = feature_layers_of(raw, variant, source)
    extra = {k: v for k, v in raw.items() if k not in _KNOWN_FIELDS}
    return HeadConfig(variant=variant, feature_layers=layers, extra=extra, **fields)


def _adopt_rope_parameters(params: Any, fields: dict[str, Any], source) -> None:
    """transformers 5 writes ``rope_parameters`` instead of ``rope_theta``/``rope_scaling``."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise HeadCheckpointError(
            f"{source}: field 'rope_parameters' must be an object, got {params!r}"
        )
    if "rope_theta" not in fields and params.get("rope_theta") is not None:
        fields["rope_theta"] = params["rope_theta"]
    if "rope_scaling" not in fields and params.get("rope_type", "default") != "default":
        fields["rope_scaling"] = params


# Which target layers an EAGLE-3 head reads, and how the serving engines are told. The engines
# read two different fields of config.json, each with its own numbering (read for facts only):
#
# - vLLM reads the top-level ``eagle_aux_hidden_state_layer_ids`` and never the nested one
#   (vllm-project/vllm vllm/v1/worker/gpu/spec_decode/eagle/eagle3_utils.py @0cfdd2e,
#   ``get_eagle3_aux_layers_from_config``; the draft's config.json fields reach that object
#   through ``EAGLEConfig``, vllm/transformers_utils/configs/eagle.py @23c5aa9). It captures
#   ``hidden_states + residual`` *before* decoder layer i for each id i, which is transformers'
#   ``hidden_states[i]`` (vllm/model_executor/models/llama.py @e06c9ba, ``LlamaModel.forward``).
# - SGLang reads only ``eagle_config["eagle_aux_hidden_state_layer_ids"]``
#   (sgl-project/sglang python/sglang/srt/model_executor/model_runner.py @0005834) and adds one
#   to each id before capturing, also before the layer
#   (python/sglang/srt/models/llama.py @0023954, ``set_eagle3_layers_to_capture`` and
#   ``LlamaModel.forward``), so nested id i is ``hidden_states[i + 1]``.
# - Without its field, each engine captures (2, L // 2, L - 3) of an L-layer target, i.e.
#   ``hidden_states[2, L // 2, L - 3]``: the same layers in both, and this library's default.
#
# So one number cannot mean the same layers in both engines, but the two fields can: a head is
# written with both, the top-level one holding the hidden_states indices and the nested one the
# same layers minus one. Both engines then capture the trained layers whatever they are.
# Reading accepts either field alone (old configs, other trainers) and refuses the two together
# when they name different layers.
TOP_LEVEL_LAYERS = "eagle_aux_hidden_state_layer_ids"  # vLLM: hidden_states indices
NESTED_LAYERS = "eagle_config.eagle_aux_hidden_state_layer_ids"  # SGLang: indices minus one


def feature_layers_of(
    raw: dict[str, Any], variant: str, source: str | os.PathLike = CONFIG_FILE
) -> tuple[int, ...] | None:
    """The target hidden_states indices named by config.json, or None for the default.

    The top-level field is read as hidden_states indices, the nested ``eagle_config`` one as
    indices minus one; when both are given they must name the same layers.
    """
    eagle_config = raw.get("eagle_config")
    if eagle_config is not None and not isinstance(eagle_config, dict):
        raise HeadCheckpointError(
            f"{source}: field 'eagle_config' must be an object, got {eagle_config!r}"
        )
    count = 3 if variant == "eagle3" else 1
    top = _layer_ids(raw.get(TOP_LEVEL_LAYERS), TOP_LEVEL_LAYERS, count, 0, source)
    nested_ids = (eagle_config or {}).get("eagle_aux_hidden_state_layer_ids")
    nested = _layer_ids(nested_ids, NESTED_LAYERS, count, -1, source)
    if nested is None:
        return top
    from_nested = tuple(i + 1 for i in nested)
    if top is not None and top != from_nested:
        raise HeadCheckpointError(
            f"{source}: fields {TOP_LEVEL_LAYERS!r} {list(top)} and {NESTED_LAYERS!r} "
            f"{list(nested)} name different target layers (vLLM would read hidden_states "
            f"{list(top)}, SGLang hidden_states {list(from_nested)}); the nested ids must be "
            "the top-level ones minus one"
        )
    return top if top is not None else from_nested


def _layer_ids(ids: Any, field: str, count: int, lowest: int, source) -> tuple[int, ...] | None:
    if ids is None:
        return None
    if not (
        isinstance(ids, list)
        and len(ids) == count
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= lowest for i in ids)
    ):
        raise HeadCheckpointError(
            f"{source}: field {field!r} must be a list of {count} layer ids, each at least "
            f"{lowest}, got {ids!r}"
        )
    return tuple(ids)


def expected_shapes(head: DraftHead) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published format for this head (embedding optional, not listed)."""
    return {k: tuple(v.shape) for k, v in head.state_dict().items() if k != "embed_tokens.weight"}


def check_state_dict(
    head: DraftHead, state: dict[str, Tensor], source: str | os.PathLike = "checkpoint"
) -> None:
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
            f"{source}: {head.variant} head weights do not match its config.json: "
            + "; ".join(p for p in parts if p)
        )


def check_tensors(config: HeadConfig, state: dict[str, Tensor], source) -> None:
    """Weights must be floating point and finite; d2t/t2d a consistent map (check_vocab_maps)."""
    weights = {k: v for k, v in state.items() if k not in ("d2t", "t2d")}
    not_float = sorted(f"{k} ({v.dtype})" for k, v in weights.items() if not v.is_floating_point())
    if not_float:
        raise HeadCheckpointError(f"{source}: weights must be floating point: {not_float}")
    not_finite = sorted(k for k, v in weights.items() if not bool(torch.isfinite(v).all()))
    if not_finite:
        raise HeadCheckpointError(f"{source}: weights hold NaN or infinite values: {not_finite}")
    if config.draft_vocab != config.vocab_size:
        check_vocab_maps(state["d2t"], state["t2d"], config.vocab_size, source)


def check_vocab_maps(d2t: Tensor, t2d: Tensor, vocab_size: int, source) -> None:
    """d2t [Vd] integer offsets (target id = i + d2t[i]) and t2d [V] bool must agree.

    Each draft id maps into 0..V-1, no two to the same target id, and t2d marks exactly the
    target ids reached (shapes are checked before, against the config).
    """
    if d2t.is_floating_point() or d2t.is_complex() or d2t.dtype == torch.bool:
        raise HeadCheckpointError(f"{source}: 'd2t' must hold integer offsets, got {d2t.dtype}")
    if t2d.dtype != torch.bool and (
        t2d.is_floating_point() or not bool(((t2d == 0) | (t2d == 1)).all())
    ):
        raise HeadCheckpointError(f"{source}: 't2d' must be a bool mask, got {t2d.dtype}")
    targets = torch.arange(d2t.shape[0]) + d2t.long()
    outside = ((targets < 0) | (targets >= vocab_size)).nonzero().flatten()
    if outside.numel():
        i = int(outside[0])
        raise HeadCheckpointError(
            f"{source}: 'd2t' maps draft id {i} (offset {int(d2t[i])}) to target id "
            f"{int(targets[i])}, outside the target vocabulary 0..{vocab_size - 1} "
            f"({outside.numel()} such entries)"
        )
    reached = torch.zeros(vocab_size, dtype=torch.bool)
    reached[targets] = True
    if int(reached.sum()) != targets.shape[0]:
        raise HeadCheckpointError(f"{source}: 'd2t' maps several draft ids to the same target id")
    differ = (reached != t2d.bool()).nonzero().flatten()
    if differ.numel():
        raise HeadCheckpointError(
            f"{source}: 't2d' disagrees with 'd2t' at {differ.numel()} target ids "
            f"(first: {differ[:5].tolist()}); t2d[j] must be true exactly for j = i + d2t[i]"
        )


def _drop_identity_maps(config: HeadConfig, state: dict[str, Tensor], source) -> dict[str, Tensor]:
    """With a full draft vocabulary, d2t/t2d may be present only as the identity map."""
    if config.variant != "eagle3" or config.draft_vocab != config.vocab_size:
        return state
    # the original EAGLE-3 trainer, SpecForge and AngelSlim register both buffers whatever the
    # draft vocabulary, so a full-vocabulary head carries them (README, "Heads from the wild")
    for key, identity, what in (
        ("d2t", lambda m: not bool(m.any()), "all 0 (draft id i is target id i)"),
        ("t2d", lambda m: bool(m.all()), "all true (every target id is a draft id)"),
    ):
        table = state.get(key)
        if table is None:
            continue
        problem = ""
        if tuple(table.shape) != (config.vocab_size,):
            problem = f"has shape {tuple(table.shape)}, not ({config.vocab_size},)"
        elif table.is_floating_point() or table.is_complex():
            problem = f"holds {table.dtype} values"
        elif not identity(table):
            problem = f"is not the identity map: it must be {what}"
        if problem:
            raise HeadCheckpointError(
                f"{source}: {key!r} {problem}; config.json has draft_vocab_size equal to "
                f"vocab_size ({config.vocab_size}), a full draft vocabulary, so {key!r} must be "
                "absent or the identity map"
            )
    return {k: v for k, v in state.items() if k not in ("d2t", "t2d")}


def _drop_zero_fc_bias(config: HeadConfig, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """An EAGLE-1 head with ``"bias": false`` may carry an all-zero ``fc.bias`` (written for
    SGLang, see ``serving_state_dict``); any other ``fc.bias`` stays and is refused by name."""
    bias = state.get("fc.bias")
    if config.variant != "eagle1" or config.bias or bias is None or bool(bias.any()):
        return state
    return {k: v for k, v in state.items() if k != "fc.bias"}


def load_head(
    path: str | os.PathLike,
    target: TargetParts,
    use_eagle3: bool | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    hub: Mapping[str, Any] | None = None,
) -> DraftHead:
    """Load a head directory strictly; ``use_eagle3`` (if given) must match the detected variant.
    ``hub``: download keywords for a hub id (``HEAD_HUB_KWARGS``; others are ignored).

    Every check runs before any weight is used: config fields, key names and shapes, dtypes,
    finiteness, the EAGLE-3 vocabulary maps, and the fit to the target's vocabulary and width.
    """
    if use_eagle3 is not None and not isinstance(use_eagle3, bool):
        raise ValueError(f"use_eagle3 must be True, False or None, got {use_eagle3!r}")
    directory = resolve_head_dir(path, hub)
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        raise HeadCheckpointError(f"no {CONFIG_FILE} in {directory}")
    raw = read_config(config_path)
    weights = weights_file(directory)
    state = read_state_dict(directory)
    try:
        raw, state = head_formats.normalise(raw, state, weights)
    except head_formats.HeadFormatError as err:
        raise HeadCheckpointError(str(err)) from None
    variant = detect_variant(raw, state, weights)
    if use_eagle3 is not None and use_eagle3 != (variant == "eagle3"):
        raise HeadCheckpointError(
            f"use_eagle3={use_eagle3} but {directory} holds an {variant.upper()} head; "
            "leave use_eagle3=None to detect the variant"
        )
    config = parse_config(raw, variant, config_path)
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    state = _drop_identity_maps(config, state, weights)
    state = _drop_zero_fc_bias(config, state)
    has_embedding = "embed_tokens.weight" in state
    with torch.device("meta"):
        head = build_head(config, target, own_embedding=has_embedding)
    check_state_dict(head, state, weights)
    check_tensors(config, state, weights)
    _check_target_fit(config, target, config_path, has_embedding)
    if "t2d" in state:
        state["t2d"] = state["t2d"].bool()
        state["d2t"] = state["d2t"].long()
    head.load_state_dict(state, strict=True, assign=True)
    # .to(dtype) casts floating tensors only: d2t (int64) and t2d (bool) keep their types
    return head.to(device=device or "cpu", dtype=dtype).eval()


def _check_target_fit(config: HeadConfig, target: TargetParts, source, has_embedding: bool) -> None:
    vocab, width = weight_of(target.embed_tokens).shape
    if config.vocab_size != vocab:
        raise HeadCheckpointError(
            f"{source}: head vocab_size {config.vocab_size} does not match the target's "
            f"vocabulary {vocab}"
        )
    target_width = config.target_hidden_size or config.hidden_size
    if config.variant == "eagle3" and target_width != width:
        raise HeadCheckpointError(
            f"{source}: EAGLE-3 head expects target hidden size {target_width} "
            f"(target_hidden_size, else hidden_size), the target has {width}"
        )
    if config.variant == "eagle3" and config.hidden_size != width and not has_embedding:
        raise HeadCheckpointError(
            f"{source}: EAGLE-3 head is {config.hidden_size} wide but the target is {width}; "
            "the target's embedding cannot feed it, so the checkpoint must include the head's "
            f"own embed_tokens.weight [{config.vocab_size}, {config.hidden_size}]"
        )
    if config.variant == "eagle1" and config.hidden_size != width:
        raise HeadCheckpointError(
            f"{source}: EAGLE-1 head hidden_size {config.hidden_size} does not match the "
            f"target's {width}"
        )


def head_config_json(config: HeadConfig) -> dict[str, Any]:
    """config.json content in the published format of the head's variant.

    An EAGLE-3 head with set ``feature_layers`` names them in both fields the serving engines
    read (see ``TOP_LEVEL_LAYERS``); an EAGLE-1 head without an fc bias says ``"bias": false``
    and its weights carry a zero ``fc.bias`` (see ``serving_state_dict``).
    """
    out = dict(config.extra)
    out.update({k: v for k, v in config.to_dict().items() if k in _KNOWN_FIELDS and v is not None})
    out.setdefault("model_type", "llama")
    nested = dict(out.pop("eagle_config", None) or {})
    nested.pop("eagle_aux_hidden_state_layer_ids", None)
    out.pop(TOP_LEVEL_LAYERS, None)
    if config.variant == "eagle3":
        out["architectures"] = [EAGLE3_ARCHITECTURE]
        out.pop("bias", None)
        out["draft_vocab_size"] = config.draft_vocab
        if config.feature_layers is not None:
            out[TOP_LEVEL_LAYERS] = list(config.feature_layers)
            nested["eagle_aux_hidden_state_layer_ids"] = [i - 1 for i in config.feature_layers]
    else:
        out.setdefault("architectures", ["LlamaForCausalLM"])
        out.pop("draft_vocab_size", None)
        out.pop("target_hidden_size", None)
        # vLLM's Llama layer reads a top-level "bias" as an attention (o_proj) bias the head
        # lacks (vllm/model_executor/models/llama.py @e06c9ba, LlamaDecoderLayer), so "bias" is
        # written only as false; absent means an fc bias, as in the original EAGLE-1 configs
        if config.bias:
            out.pop("bias", None)
        else:
            out["bias"] = False
    if nested:
        out["eagle_config"] = nested
    return out


def serving_state_dict(head: DraftHead) -> dict[str, Tensor]:
    """The weights as written: the head's state dict, plus a zero ``fc.bias`` for an EAGLE-1
    head built without one.

    The engines disagree on the EAGLE-1 ``fc`` bias (read for facts only): vLLM builds ``fc``
    without a bias (vllm-project/vllm vllm/model_executor/models/llama_eagle.py @00da923 skips a
    checkpoint ``fc.bias`` it has no parameter for; @e1c4a55 failed on it), while SGLang builds
    it with one and loads it from the checkpoint (sgl-project/sglang
    python/sglang/srt/models/llama_eagle.py @034b3be: ``nn.Linear(2H, H)``; without a
    checkpoint value the bias keeps its random initialisation). A head trained without a bias
    (the trainer's default) computes the same function with a zero bias, and written that way it
    computes it in both engines; ``load_head`` drops a zero ``fc.bias`` again when config.json
    says ``"bias": false``.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    if head.variant == "eagle1" and "fc.bias" not in state:
        weight = state["fc.weight"]
        state["fc.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return state


def save_head(
    head: DraftHead, directory: str | os.PathLike, safe_serialization: bool = True
) -> Path:
    """Write config.json and the weights in the published format of the head's variant."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(head_config_json(head.config), indent=2) + "\n")
    state = serving_state_dict(head)
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, directory / SAFETENSORS_FILE)
    else:
        torch.save(state, directory / TORCH_FILE)
    return directory
