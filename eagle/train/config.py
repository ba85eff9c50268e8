"""Typed training configuration, loaded strictly from JSON.

Owns: ``TrainConfig`` (``variant`` + ``head`` + ``train`` sections), ``load_config`` /
``config_from_dict`` (an unknown key anywhere is an error naming it and listing the known keys; a
value of the wrong type, a float that is not finite and a value out of its range are errors
naming the key and what is allowed), ``with_overrides`` for command-line flags, and
``build_head_config``, which turns the ``head`` section into the ``HeadConfig`` of
``eagle.model.draft_head``.

Design choices:
- Head architecture fields left out (``null``) are taken from the target's config: an EAGLE-1
  head must have the target's width; an EAGLE-3 head defaults to it and may be narrower or wider
  (the checkpoint then records ``target_hidden_size``). The draft vocabulary size defaults to
  the data's vocabulary file.
- Variant-dependent training defaults are ``None`` in the file and resolved by properties:
  input noise 0.1 (EAGLE-1) / 0 (EAGLE-3), unrolled steps 1 (EAGLE-1) / 7 (EAGLE-3).
- No field is a path: data, checkpoints and the target come from the command line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eagle.model.draft_head import HeadConfig

logger = logging.getLogger(__name__)

VARIANTS = ("eagle1", "eagle3")
SCHEDULES = ("constant", "linear", "cosine")
LM_HEAD_INITS = ("random", "target")
_HEAD_ROPE_TYPES = ("default", "linear", "llama3")  # what draft_head.Rotary implements


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class HeadSettings:
    """Draft-head architecture. ``None`` = take it from the target's config (or the data)."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    num_hidden_layers: int = 1  # EAGLE-1 may stack more; EAGLE-3 has exactly one
    rms_norm_eps: float | None = None
    hidden_act: str | None = None
    max_position_embeddings: int | None = None
    rope_theta: float | None = None
    # EAGLE-1 fc bias. Off: vLLM's EAGLE-1 head has no fc bias and drops a trained one; the
    # head is saved with a zero fc.bias, which SGLang needs (checkpoint.serving_state_dict)
    bias: bool = False
    qkv_bias: bool = False
    draft_vocab_size: int | None = None  # EAGLE-3; None = the data's draft vocabulary
    target_hidden_size: int | None = None  # EAGLE-3; if given it must equal the target's width
    save_embedding: bool = False  # write a copy of the target's embedding into the head folder
    # EAGLE-3 lm_head start: "random", or "target": the target's lm_head rows of the draft
    # vocabulary (the head then starts by reading its output as the target reads its own state)
    lm_head_init: str = "random"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation, batching, loss and bookkeeping settings."""

    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 0.5
    warmup_steps: int = 0
    schedule: str = "linear"  # after warm-up: constant, linear decay to 0, or cosine to 0
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    batch_size: int = 4  # samples per micro-batch (an upper bound when batch_tokens is set)
    batch_tokens: int | None = None  # padded tokens per micro-batch; None = batch by samples
    gradient_accumulation_steps: int = 1
    max_len: int = 2048  # samples are truncated to this many tokens
    noise: float | None = None  # uniform input-feature noise half-width; None = variant default
    unroll_steps: int | None = None  # training-time-test steps; None = variant default
    step_weight: float = 0.8  # step s of the unrolled loss is weighted step_weight ** s
    feature_weight: float = 1.0  # EAGLE-1: SmoothL1 feature regression
    token_weight: float = 0.1  # EAGLE-1: soft cross-entropy of the target's distribution
    val_fraction: float = 0.05  # held-out samples (deterministic split by sample)
    seed: int = 0
    save_every: int = 0  # optimizer steps between checkpoints; 0 = end of each epoch only
    keep_checkpoints: int = 2  # training-state folders kept in --cpdir (newest first)
    num_workers: int = 0  # DataLoader worker processes


@dataclass(frozen=True)
class TrainConfig:
    variant: str
    head: HeadSettings = field(default_factory=HeadSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    description: str = ""  # free text for humans, ignored

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def noise(self) -> float:
        if self.train.noise is not None:
            return self.train.noise
        return 0.1 if self.variant == "eagle1" else 0.0

    @property
    def unroll_steps(self) -> int:
        if self.train.unroll_steps is not None:
            return self.train.unroll_steps
        return 1 if self.variant == "eagle1" else 7

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _validate(config: TrainConfig) -> None:
    _check_finite(config)
    t = config.train
    checks = [
        (config.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {config.variant!r}"),
        (t.schedule in SCHEDULES, f"train.schedule must be one of {SCHEDULES}"),
        (
            config.head.lm_head_init in LM_HEAD_INITS,
            f"head.lm_head_init must be one of {LM_HEAD_INITS}, got {config.head.lm_head_init!r}",
        ),
        (t.lr > 0, "train.lr must be > 0"),
        (t.epochs >= 1, "train.epochs must be >= 1"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.batch_tokens is None or t.batch_tokens >= 1, "train.batch_tokens must be >= 1"),
        (t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps must be >= 1"),
        (t.max_len >= 3, "train.max_len must be >= 3"),
        (t.unroll_steps is None or t.unroll_steps >= 1, "train.unroll_steps must be >= 1"),
        (0.0 <= t.val_fraction < 1.0, "train.val_fraction must be in [0, 1)"),
        (t.max_steps is None or t.max_steps >= 1, "train.max_steps must be >= 1"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (
            config.variant == "eagle1" or config.head.num_hidden_layers == 1,
            "an EAGLE-3 head has exactly one layer (head.num_hidden_layers = 1)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _check_ranges(config)


def _check_finite(config: TrainConfig) -> None:
    """Every float setting (tuples included) must be a finite number: no NaN, no infinity."""
    for section in ("head", "train"):
        settings = getattr(config, section)
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, float) and not math.isfinite(item):
                    raise ConfigError(f"{section}.{f.name} must be a finite number, got {value!r}")


def _check_ranges(config: TrainConfig) -> None:
    """Counts, weights and optimiser settings within their meaningful ranges."""
    t, h = config.train, config.head
    head_counts = (
        "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
        "head_dim", "num_hidden_layers", "max_position_embeddings", "draft_vocab_size",
        "target_hidden_size",
    )  # fmt: skip
    lower_bounds = [  # (key, value or None, bound, whether the bound itself is allowed)
        ("train.weight_decay", t.weight_decay, 0, True),
        ("train.grad_clip", t.grad_clip, 0, False),
        ("train.warmup_steps", t.warmup_steps, 0, True),
        ("train.noise", t.noise, 0, True),
        ("train.step_weight", t.step_weight, 0, False),
        ("train.feature_weight", t.feature_weight, 0, True),
        ("train.token_weight", t.token_weight, 0, True),
        ("train.seed", t.seed, 0, True),
        ("train.save_every", t.save_every, 0, True),
        ("train.num_workers", t.num_workers, 0, True),
        ("head.rms_norm_eps", h.rms_norm_eps, 0, False),
        ("head.rope_theta", h.rope_theta, 0, False),
        *((f"head.{name}", getattr(h, name), 1, True) for name in head_counts),
    ]
    for key, value, bound, inclusive in lower_bounds:
        if value is not None and (value < bound or (value == bound and not inclusive)):
            relation = ">=" if inclusive else ">"
            raise ConfigError(f"{key} must be {relation} {bound}, got {value!r}")
    for index, beta in enumerate(t.betas):
        if not 0 <= beta < 1:
            raise ConfigError(f"train.betas[{index}] must be in [0, 1), got {beta!r}")
    if t.seed >= 2**32:
        raise ConfigError(f"train.seed must be < 2**32 (NumPy's limit), got {t.seed}")
    if config.variant == "eagle1" and t.feature_weight + t.token_weight == 0:
        raise ConfigError("train.feature_weight and train.token_weight are both 0: no loss")
    heads, kv_heads = h.num_attention_heads, h.num_key_value_heads
    if heads and kv_heads and heads % kv_heads:
        raise ConfigError(
            f"head.num_attention_heads ({heads}) must be a multiple of head.num_key_value_heads "
            f"({kv_heads})"
        )


# -- loading ------------------------------------------------------------------------------------


def load_config(path: str | Path) -> TrainConfig:
    """Read a JSON config file; unknown keys and wrongly typed values are errors."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from err
    return config_from_dict(data, where=str(path))


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    if isinstance(data, dict) and "variant" not in data and is_original_head_config(data):
        suggestion = json.dumps(from_original_head_config(data), indent=1)
        raise ConfigError(
            f"{where} is a head architecture config of the original EAGLE's training (a "
            "transformers model config such as vicuna_7B_config.json). eagle.train.main takes a "
            "training config instead: 'variant' (eagle1 or eagle3), 'head' (architecture; "
            "absent sizes come from the target) and 'train' (hyperparameters; see "
            "eagle/train/configs/*_generic.json). The same head as a training config, with the "
            f"generic defaults for training:\n{suggestion}"
        )
    if "variant" not in data:
        raise ConfigError(f"{where}: the key 'variant' ({' or '.join(VARIANTS)}) is required")
    return _build(TrainConfig, data, where)


# keys of a transformers model config that mean the same in ``HeadSettings``
_ORIGINAL_HEAD_KEYS = (
    "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
    "rms_norm_eps", "hidden_act", "max_position_embeddings", "rope_theta", "draft_vocab_size",
)  # fmt: skip


def is_original_head_config(data: dict[str, Any]) -> bool:
    """Whether ``data`` is a transformers model config, as the original EAGLE's training read
    for the head's architecture (``architectures``/``model_type`` with the sizes)."""
    return ("architectures" in data or "model_type" in data) and "hidden_size" in data


def from_original_head_config(data: dict[str, Any]) -> dict[str, Any]:
    """A training config for the head that an original EAGLE head config describes: EAGLE-3
    when it has ``draft_vocab_size`` (the original's EAGLE-3 configs do), else EAGLE-1 (with
    its layer count); the training section is the generic config's of that variant."""
    variant = "eagle3" if "draft_vocab_size" in data else "eagle1"
    head = {k: data[k] for k in _ORIGINAL_HEAD_KEYS if data.get(k) is not None}
    if variant == "eagle1" and "num_hidden_layers" in data:
        head["num_hidden_layers"] = data["num_hidden_layers"]
    generic = json.loads(
        (Path(__file__).parent / "configs" / f"{variant}_generic.json").read_text()
    )
    return {"variant": variant, "head": head, "train": generic["train"]}


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        hint = hints[name]
        path = f"{where}.{name}"
        values[name] = (
            _build(hint, value, path)
            if isinstance(hint, type) and dataclasses.is_dataclass(hint)
            else _typed(value, hint, path)
        )
    return cls(**values)


def _typed(value: Any, hint: Any, where: str) -> Any:
    """Check a JSON value against a field's type hint (ints are accepted for floats)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(value, inner, where)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(
            _typed(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    ok = (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
        if hint is not float
        else isinstance(value, int | float) and not isinstance(value, bool)
    )
    if not ok:
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def with_overrides(config: TrainConfig, **train_fields: Any) -> TrainConfig:
    """A copy with the given ``train`` fields replaced (``None`` values are ignored)."""
    given = {k: v for k, v in train_fields.items() if v is not None}
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **given))


# -- head architecture -------------------------------------------------------------------------


def build_head_config(
    config: TrainConfig,
    target_config: Any,
    vocab_size: int,
    draft_vocab_size: int | None,
    feature_layers: tuple[int, ...] | None,
) -> HeadConfig:
    """The head's ``HeadConfig``: the ``head`` section with ``None`` fields from the target.

    ``target_config`` is the target's transformers config; ``draft_vocab_size`` is the data's
    draft vocabulary size (EAGLE-3); ``feature_layers`` the target hidden-state indices the
    data's EAGLE-3 features come from.
    """
    h = config.head
    target_width = int(target_config.hidden_size)
    width = h.hidden_size or target_width
    if config.variant == "eagle1" and width != target_width:
        raise ConfigError(
            f"head.hidden_size {width} differs from the target's {target_width}; an EAGLE-1 head "
            "predicts target features and must have the target's width"
        )
    if h.target_hidden_size is not None and h.target_hidden_size != target_width:
        raise ConfigError(
            f"head.target_hidden_size {h.target_hidden_size} != the target's width {target_width}"
        )
    same_width = width == target_width
    fields = dict(
        variant=config.variant,
        hidden_size=width,
        intermediate_size=h.intermediate_size or _scaled(target_config, width),
        num_attention_heads=h.num_attention_heads or int(target_config.num_attention_heads),
        num_key_value_heads=h.num_key_value_heads or _kv_heads(target_config),
        num_hidden_layers=h.num_hidden_layers,
        vocab_size=vocab_size,
        rms_norm_eps=_first(h.rms_norm_eps, getattr(target_config, "rms_norm_eps", None), 1e-6),
        hidden_act=h.hidden_act or getattr(target_config, "hidden_act", "silu"),
        max_position_embeddings=h.max_position_embeddings
        or int(getattr(target_config, "max_position_embeddings", 2048)),
        head_dim=h.head_dim or (_target_head_dim(target_config) if same_width else None),
        qkv_bias=h.qkv_bias,
    )
    if config.variant == "eagle1":  # an EAGLE-3 fc never has a bias; its configs leave it out
        fields["bias"] = h.bias
    fields.update(_rope_fields(h, target_config))
    if config.variant == "eagle3":
        fields["draft_vocab_size"] = h.draft_vocab_size or draft_vocab_size or vocab_size
        fields["target_hidden_size"] = None if same_width else target_width
        fields["feature_layers"] = feature_layers
    return HeadConfig(**fields)


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _scaled(target_config: Any, width: int) -> int:
    """The target's MLP width, scaled with the head width when the head is narrower/wider."""
    inner = int(target_config.intermediate_size)
    return inner * width // int(target_config.hidden_size)


def _kv_heads(target_config: Any) -> int:
    kv = getattr(target_config, "num_key_value_heads", None)
    return int(kv or target_config.num_attention_heads)


def _target_head_dim(target_config: Any) -> int | None:
    """The target's explicit head_dim if it differs from hidden_size / heads, else None."""
    explicit = getattr(target_config, "head_dim", None)
    implied = int(target_config.hidden_size) // int(target_config.num_attention_heads)
    return int(explicit) if explicit and int(explicit) != implied else None


def _rope_fields(h: HeadSettings, target_config: Any) -> dict[str, Any]:
    params = dict(getattr(target_config, "rope_parameters", None) or {})
    theta = h.rope_theta or params.get("rope_theta") or getattr(target_config, "rope_theta", None)
    kind = params.get("rope_type", "default")
    scaling = None
    if kind not in ("default", None):
        if kind in _HEAD_ROPE_TYPES:
            scaling = params
        else:
            logger.warning(
                "the head uses plain RoPE: the target's %r scaling is not supported", kind
            )
    return {"rope_theta": float(theta or 10000.0), "rope_scaling": scaling}
