"""Heads from the wild: how published head families map onto the two formats ``checkpoint`` loads.

``checkpoint.load_head`` knows one EAGLE-1 and one EAGLE-3 layout (spec section 4). Heads on the
hub come from several trainers that name and configure the same computation differently. This
module turns such a head into that layout before the strict checks run, with the differences
written as data, and refuses what would compute something else, saying what and why:

- ``KEY_RENAMES``: key prefixes some trainers use for the same parameter.
- ``NESTED_CONFIGS``: config formats that keep the layer fields in a nested object.
- ``UNSUPPORTED``: config fields and keys that change the computation; each row says what
  the head would need and why this library's head cannot do it without a change to
  ``draft_head``.

The survey behind the rows (family, config fields, keys, what we do, source, test) is the
table "Heads from the wild" in README.md; each row has a test in ``tests/test_heads_wild.py``.
Sources were read for facts only; nothing here is copied from them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

# architectures named in config.json by the trainers and engines that write EAGLE-3 heads:
# the original trainer and SpecForge (LlamaForCausalLMEagle3), AngelSlim and vLLM
# (Eagle3LlamaForCausalLM), vllm-project/speculators (Eagle3Speculator, Eagle3DraftModel)
EAGLE3_ARCHITECTURES = frozenset(
    {"LlamaForCausalLMEagle3", "Eagle3LlamaForCausalLM", "Eagle3Speculator", "Eagle3DraftModel"}
)


class HeadFormatError(ValueError):
    """A published head family this library cannot run; the message says what and why."""


@dataclass(frozen=True)
class KeyRename:
    """Rename keys starting with ``old`` to start with ``new`` when ``marker`` is a key."""

    old: str
    new: str
    marker: str  # a key only this family has, so the rename never touches another layout
    family: str


KEY_RENAMES = (
    # vllm-project/speculators saves the EAGLE-3 decoder layer as layers.0 (src/speculators/
    # models/eagle3.py, Eagle3Speculator.layers); vLLM itself loads midlayer.* as layers.0.*
    # (vllm/model_executor/models/llama_eagle3.py, LlamaModel.load_weights). hidden_norm exists
    # only in an EAGLE-3 layer, so an EAGLE-1 head's layers.0 is never renamed.
    KeyRename("layers.0.", "midlayer.", "layers.0.hidden_norm.weight", "EAGLE-3 as layers.0"),
)


@dataclass(frozen=True)
class NestedConfig:
    """A config format that keeps the decoder-layer fields in ``raw[nested]``."""

    marker: str  # top-level field that identifies the format
    value: str
    nested: str
    layer_ids: str  # top-level field with the target layers, eagle_config's numbering
    family: str


NESTED_CONFIGS = (
    # vllm-project/speculators Eagle3SpeculatorConfig (src/speculators/models/eagle3.py):
    # transformer_layer_config holds hidden_size etc.; draft_vocab_size, target_hidden_size,
    # norm_before_residual (and in later versions norm_before_fc, fc_norm, norm_output and
    # eagle_aux_hidden_state_layer_ids) are top-level
    NestedConfig(
        "speculators_model_type",
        "eagle3",
        "transformer_layer_config",
        "eagle_aux_hidden_state_layer_ids",
        "speculators EAGLE-3",
    ),
)


@dataclass(frozen=True)
class Unsupported:
    """A family feature the head cannot compute: ``marks(config, state)`` finds it."""

    name: str
    marks: Callable[[dict[str, Any], dict[str, Tensor]], bool]
    reason: str


def _flag(field: str) -> Callable[[dict[str, Any], dict[str, Tensor]], bool]:
    return lambda raw, state: raw.get(field) is True


def _has_key(prefix: str) -> Callable[[dict[str, Any], dict[str, Tensor]], bool]:
    return lambda raw, state: any(k.startswith(prefix) for k in state)


def _or(*tests):
    return lambda raw, state: any(t(raw, state) for t in tests)


def _eagle3_layers_beyond_first(raw: dict[str, Any], state: dict[str, Tensor]) -> bool:
    eagle3 = any(k.startswith("midlayer.") for k in state)
    return eagle3 and any(k.startswith("layers.") for k in state)


_NEEDS = (
    "this library's EAGLE-3 head (draft_head.Eagle3Head) cannot: it needs an architecture change"
)
UNSUPPORTED = (
    # vllm-project/speculators Eagle3DecoderLayer and vLLM LlamaDecoderLayer: with
    # norm_before_residual the residual around attention is hidden_norm(feature)
    Unsupported(
        "norm_before_residual",
        _flag("norm_before_residual"),
        "the head adds the *normalised* feature as the attention residual "
        f"(norm_before_residual: true); {_NEEDS}",
    ),
    # speculators Eagle3DraftModel.input_norm [3H] (norm_before_fc, the gpt-oss recipe)
    Unsupported(
        "norm_before_fc",
        _or(_flag("norm_before_fc"), _has_key("input_norm.")),
        "the head applies an RMSNorm over the concatenated target features before fc "
        f"(norm_before_fc: true / input_norm.weight); {_NEEDS}",
    ),
    # SpecForge configs/qwen3-30B-A3B-eagle3.1.json ("EAGLE 3.1"): one norm per target feature
    Unsupported(
        "fc_norm",
        _or(_flag("fc_norm"), _has_key("fc_norm")),
        f"the head normalises each target feature before fc (fc_norm: true, EAGLE 3.1); {_NEEDS}",
    ),
    Unsupported(
        "norm_output",
        _flag("norm_output"),
        "norm_output: true (EAGLE 3.1) moves where the head's output is normalised; this "
        "library's head feeds back the un-normalised output and normalises only before "
        f"lm_head; {_NEEDS}",
    ),
    # the first speculators Eagle3Speculator built fc with bias=True
    Unsupported(
        "EAGLE-3 fc bias",
        lambda raw, state: "fc.bias" in state and any(k.startswith("midlayer.") for k in state),
        f"the EAGLE-3 head's fc has a bias (fc.bias); {_NEEDS}",
    ),
    # vLLM and SGLang run EAGLE-3 heads with num_hidden_layers > 1 (extra plain decoder layers
    # after the first); the original and SpecForge heads have one midlayer
    Unsupported(
        "several EAGLE-3 layers",
        _eagle3_layers_beyond_first,
        "the EAGLE-3 head has decoder layers after its first (layers.1.* ...); "
        f"this library's EAGLE-3 head has exactly one midlayer; {_NEEDS}",
    ),
)


def normalise(
    raw: dict[str, Any], state: dict[str, Tensor], source: str | os.PathLike
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A published head's (config, state dict) in the layout ``checkpoint`` checks strictly.

    Flattens nested config formats, applies the key renames, then raises HeadFormatError for
    the first ``UNSUPPORTED`` feature found, naming the file, the feature and the reason.
    """
    raw = _flatten(raw, source)
    for rename in KEY_RENAMES:
        if rename.marker in state:
            state = {
                (rename.new + k[len(rename.old) :] if k.startswith(rename.old) else k): v
                for k, v in state.items()
            }
    for feature in UNSUPPORTED:
        if feature.marks(raw, state):
            raise HeadFormatError(f"{source}: unsupported head ({feature.name}): {feature.reason}")
    return raw, state


def _flatten(raw: dict[str, Any], source) -> dict[str, Any]:
    for fmt in NESTED_CONFIGS:
        if raw.get(fmt.marker) != fmt.value:
            continue
        nested = raw.get(fmt.nested)
        if not isinstance(nested, dict):
            raise HeadFormatError(
                f"{source}: a {fmt.family} config needs an object {fmt.nested!r}, got {nested!r}"
            )
        # top-level fields win (architectures, draft_vocab_size, target_hidden_size); the
        # format's own fields go, so a head saved again is written in the flat format
        own = (fmt.marker, fmt.nested, fmt.layer_ids)
        flat = nested | {k: v for k, v in raw.items() if k not in own}
        if raw.get(fmt.layer_ids) is not None and "eagle_config" not in raw:
            flat["eagle_config"] = {"eagle_aux_hidden_state_layer_ids": raw[fmt.layer_ids]}
        return flat
    return raw


def names_eagle3(raw: dict[str, Any]) -> bool:
    """True when config.json names an EAGLE-3 head (draft_vocab_size or an architecture)."""
    architectures = raw.get("architectures")
    named = isinstance(architectures, list) and any(
        a in EAGLE3_ARCHITECTURES for a in architectures
    )
    return named or "draft_vocab_size" in raw
