"""EAGLE-1 and EAGLE-3 draft heads, written in plain torch.

The heads are small Llama-style decoders. They do not reuse transformers' decoder layers: a
head is one or two layers, its attention must take an explicit tree mask and an explicit
key/value prefix, and its state dict must match the published checkpoints key for key
(`checkpoint.py` owns the formats). Everything here works on a leading batch axis so the same
modules serve inference (batch 1) and training.

Shapes: B batch, S new positions, P cached positions, H head width, F target feature width,
V target vocabulary, Vd draft vocabulary, kvH key/value heads, D head dim.

EAGLE-1 (also used by EAGLE-2): ``x = fc([embed(token_{t+1}), feature_t])`` then
``num_hidden_layers`` decoder layers (layer 0 without input norm); the output is the predicted
next feature and the logits come from the *target's* ``lm_head``.

EAGLE-3: target features are three concatenated layers, projected by ``fc`` (3F -> H); a
feature produced by the head itself already has width H and bypasses ``fc``. One ``midlayer``
whose attention reads ``[input_layernorm(embed), hidden_norm(feature)]`` (2H wide); logits are
``lm_head(norm(out))`` over the draft vocabulary, mapped to target ids by ``d2t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eagle.model.products import F_LINEAR, RowProduct

Variant = Literal["eagle1", "eagle3"]
KV = tuple[Tensor, Tensor]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class HeadConfig:
    """The fields of a head's ``config.json`` that define its computation."""

    variant: Variant
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    num_hidden_layers: int = 1
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    head_dim: int | None = None
    bias: bool = True  # EAGLE-1 fc bias
    qkv_bias: bool = False
    draft_vocab_size: int | None = None  # EAGLE-3
    target_hidden_size: int | None = None  # EAGLE-3, when the target is wider than the head
    # hidden_states indices of the target that make the feature; None = the variant's default
    feature_layers: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # other config.json keys, kept on save

    def __post_init__(self) -> None:
        if self.variant not in ("eagle1", "eagle3"):
            raise ValueError(f"variant must be 'eagle1' or 'eagle3', got {self.variant!r}")
        try:
            check_head_fields(self.to_dict(), self.variant)
        except HeadFieldError as err:
            raise ValueError(f"HeadConfig field {err.field!r} {err.problem}") from None

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def draft_vocab(self) -> int:
        if self.variant == "eagle1":
            return self.vocab_size
        return self.draft_vocab_size or self.vocab_size

    @property
    def feature_width(self) -> int:
        """Width of the target feature this head consumes (F)."""
        if self.variant == "eagle1":
            return self.hidden_size
        return 3 * (self.target_hidden_size or self.hidden_size)

    def default_feature_layers(self, num_target_layers: int) -> tuple[int, ...]:
        """hidden_states indices: EAGLE-1 the post-norm last state, EAGLE-3 inputs of 2, L/2, L-3."""
        if self.feature_layers is not None:
            return self.feature_layers
        if self.variant == "eagle1":
            return (-1,)
        n = num_target_layers
        return (min(2, n), n // 2, max(n - 3, 0))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out["feature_layers"] = list(self.feature_layers) if self.feature_layers else None
        return out


class HeadFieldError(ValueError):
    """A head config field with a wrong type or value; ``field`` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r} {problem}")
        self.field, self.problem = field, problem


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) > 0


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value) > 0
    )


_POSITIVE_INT = (_is_positive_int, "a positive integer")
_POSITIVE_NUMBER = (_is_positive_number, "a positive finite number")
_BOOLEAN = (lambda v: isinstance(v, bool), "true or false")
# field -> (check, what it must be); None (JSON null) means "not set" for the optional fields
FIELD_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hidden_size": _POSITIVE_INT,
    "intermediate_size": _POSITIVE_INT,
    "num_attention_heads": _POSITIVE_INT,
    "num_key_value_heads": _POSITIVE_INT,
    "vocab_size": _POSITIVE_INT,
    "num_hidden_layers": _POSITIVE_INT,
    "max_position_embeddings": _POSITIVE_INT,
    "head_dim": _POSITIVE_INT,
    "draft_vocab_size": _POSITIVE_INT,
    "target_hidden_size": _POSITIVE_INT,
    "rms_norm_eps": _POSITIVE_NUMBER,
    "rope_theta": _POSITIVE_NUMBER,
    "hidden_act": (
        lambda v: isinstance(v, str) and v in _ACTIVATIONS,
        f"one of {sorted(_ACTIVATIONS)}",
    ),
    "bias": _BOOLEAN,
    "qkv_bias": _BOOLEAN,
    "rope_scaling": (lambda v: isinstance(v, dict), "an object"),
}
ROPE_TYPES = ("default", "linear", "llama3")
_ROPE_NUMBERS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def check_head_fields(fields: dict[str, Any], variant: str) -> None:
    """Raise HeadFieldError for the first field of ``fields`` with a wrong type or range.

    ``fields`` maps config.json names to values; absent or None optional fields are skipped.
    Also checks the relations between fields that the head's shapes rely on.
    """
    for name, (valid, expected) in FIELD_RULES.items():
        value = fields.get(name)
        if value is not None and not valid(value):
            raise HeadFieldError(
                name, f"must be {expected}, got {value!r} ({type(value).__name__})"
            )
    heads, kv_heads = fields.get("num_attention_heads"), fields.get("num_key_value_heads")
    if heads and kv_heads and heads % kv_heads:
        raise HeadFieldError(
            "num_key_value_heads", f"({kv_heads}) must divide num_attention_heads ({heads})"
        )
    hidden, vocab, draft_vocab = (
        fields.get(k) for k in ("hidden_size", "vocab_size", "draft_vocab_size")
    )
    if heads and hidden and fields.get("head_dim") is None and hidden % heads:
        raise HeadFieldError(
            "num_attention_heads",
            f"({heads}) must divide hidden_size ({hidden}) unless head_dim is given",
        )
    if variant == "eagle3" and fields.get("num_hidden_layers", 1) != 1:
        raise HeadFieldError("num_hidden_layers", "must be 1 for an EAGLE-3 head")
    if draft_vocab and vocab and draft_vocab > vocab:
        raise HeadFieldError(
            "draft_vocab_size", f"({draft_vocab}) must not exceed vocab_size ({vocab})"
        )
    if fields.get("rope_scaling") is not None:
        _check_rope_scaling(fields["rope_scaling"])


def _check_rope_scaling(scaling: dict[str, Any]) -> None:
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise HeadFieldError(
            "rope_scaling",
            f"type {kind!r} is not supported by the draft head; choose from {ROPE_TYPES}",
        )
    for key in _ROPE_NUMBERS.get(kind, ()):
        if not _is_positive_number(scaling.get(key)):
            raise HeadFieldError(
                "rope_scaling",
                f"{key!r} must be a positive finite number for {kind!r} scaling, "
                f"got {scaling.get(key)!r}",
            )
    if kind == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise HeadFieldError("rope_scaling", "'high_freq_factor' must exceed 'low_freq_factor'")


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_inverse_frequencies(config: HeadConfig) -> tuple[Tensor, float]:
    """Inverse frequencies [D/2] (float32, computed on the CPU in float64) and the position
    divisor for the head's RoPE scaling type."""
    d = config.dim_per_head
    exponents = torch.arange(0, d, 2, dtype=torch.float64, device="cpu") / d
    inv = 1.0 / (config.rope_theta**exponents)
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv.float(), 1.0
    if kind == "linear":
        return inv.float(), float(scaling["factor"])
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        original = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = ((original / wavelen - low) / (high - low)).clamp(0, 1)
        blended = (1 - smooth) * inv / factor + smooth * inv
        return blended.float(), 1.0
    raise ValueError(
        f"rope_scaling type {kind!r} is not supported by the draft head; "
        "supported: default, linear, llama3"
    )


class Rotary(nn.Module):
    """RoPE in the rotate-half convention of Llama checkpoints.

    The module owns its table: the inverse frequencies are derived from the config, never
    loaded from a checkpoint and never cast. Moving or casting the head (``.to``, ``.cuda``,
    ``.half``, ``to_empty``, DeepSpeed's bf16 cast) recomputes them in float32 on the new device,
    so a bf16 head rotates with the frequencies it was trained with, and a head built on the meta
    device (as ``checkpoint.load_head`` builds it) gets real values when it is moved.
    """

    inv_freq: Tensor  # [D/2] float32, a non-persistent buffer

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.divisor = rope_inverse_frequencies(config)[1]
        inv_freq = self._frequencies(torch.get_default_device())
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _frequencies(self, device: torch.device) -> Tensor:
        return rope_inverse_frequencies(self.config)[0].to(device)

    def _apply(self, fn, recurse: bool = True):  # no submodules: recurse changes nothing
        # ``fn`` converts one tensor; where it sends a probe is the new device (a meta buffer
        # stands for the CPU: it holds no values to convert)
        here = self.inv_freq.device
        probe = torch.empty(0, device="cpu" if here.type == "meta" else here)
        self.inv_freq = self._frequencies(fn(probe).device)
        return self

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions [B, S] -> cos, sin [B, 1, S, D]."""
        angles = (positions.float() / self.divisor)[..., None] * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Grouped-query attention over an explicit key/value prefix and an explicit bool mask."""

    def __init__(self, config: HeadConfig, input_width: int) -> None:
        super().__init__()
        d, heads, kv_heads = (
            config.dim_per_head,
            config.num_attention_heads,
            config.num_key_value_heads,
        )
        self.heads, self.kv_heads, self.dim = heads, kv_heads, d
        self.q_proj = nn.Linear(input_width, heads * d, bias=config.qkv_bias)
        self.k_proj = nn.Linear(input_width, kv_heads * d, bias=config.qkv_bias)
        self.v_proj = nn.Linear(input_width, kv_heads * d, bias=config.qkv_bias)
        self.o_proj = nn.Linear(heads * d, config.hidden_size, bias=False)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], past: KV | None, mask: Tensor
    ) -> tuple[Tensor, KV]:
        """x [B,S,in], past ([B,kvH,P,D] x2) or None, mask [B|1, S, P+S] bool (True = attend).

        Returns the output [B,S,H] and the new positions' (keys, values) [B,kvH,S,D].
        """
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.dim).transpose(1, 2)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        keys, values = (
            (k, v) if past is None else (torch.cat((past[0], k), 2), torch.cat((past[1], v), 2))
        )
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask[:, None], enable_gqa=self.heads != self.kv_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        h, i = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Eagle1Layer(nn.Module):
    """A pre-norm Llama decoder layer; the first layer of an EAGLE-1 head has no input norm."""

    def __init__(self, config: HeadConfig, first: bool) -> None:
        super().__init__()
        # layer 0 of an EAGLE-1 head reads the fc output directly (no weights: no state-dict key)
        self.input_layernorm = (
            nn.Identity() if first else RMSNorm(config.hidden_size, config.rms_norm_eps)
        )
        self.self_attn = Attention(config, config.hidden_size)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, rope, past: KV | None, mask: Tensor) -> tuple[Tensor, KV]:
        attn, kv = self.self_attn(self.input_layernorm(x), rope, past, mask)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class Eagle3Layer(nn.Module):
    """The EAGLE-3 midlayer: attention over [norm(embedding), norm(feature)], residual = feature."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.input_layernorm = RMSNorm(h, config.rms_norm_eps)
        self.hidden_norm = RMSNorm(h, config.rms_norm_eps)
        self.self_attn = Attention(config, 2 * h)
        self.post_attention_layernorm = RMSNorm(h, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self, embeds: Tensor, feature: Tensor, rope, past: KV | None, mask: Tensor
    ) -> tuple[Tensor, KV]:
        joint = torch.cat((self.input_layernorm(embeds), self.hidden_norm(feature)), dim=-1)
        attn, kv = self.self_attn(joint, rope, past, mask)
        x = feature + attn
        return x + self.mlp(self.post_attention_layernorm(x)), kv


@dataclass(frozen=True)
class TargetParts:
    """Modules borrowed from the target (not owned, not saved): its embedding and lm_head."""

    embed_tokens: nn.Module
    lm_head: nn.Module | None


def weight_of(module: nn.Module | None) -> Tensor:
    """``module.weight`` [rows, width] of an embedding or linear layer, checked to be a tensor."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


class DraftHead(nn.Module):
    """Common interface of the two head variants.

    ``forward(features, tokens, positions, past, mask)`` runs the head over S positions, where
    ``features`` are already in head width (see ``project_target_features``) and ``tokens`` are
    target ids of the *next* tokens (pair t = (feature_t, token_{t+1})).
    """

    config: HeadConfig
    fc: nn.Linear  # the input projection of either variant (its weight gives dtype and device)

    def __init__(self, config: HeadConfig, target: TargetParts, own_embedding: bool) -> None:
        super().__init__()
        self.config = config
        self.rotary = Rotary(config)
        self.embed_tokens = (
            nn.Embedding(config.vocab_size, config.hidden_size).requires_grad_(False)
            if own_embedding
            else None
        )
        self._target = target

    @property
    def variant(self) -> Variant:
        return self.config.variant

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    def embed(self, tokens: Tensor) -> Tensor:
        table = self.embed_tokens if self.embed_tokens is not None else self._target.embed_tokens
        return table(tokens)

    def project_target_features(self, features: Tensor) -> Tensor:
        """Target feature [.., F] -> head input feature [.., H]."""
        raise NotImplementedError

    def logits(self, hidden: Tensor, product: RowProduct = F_LINEAR) -> Tensor:
        """Head output [.., H] -> logits [.., Vd] over the draft vocabulary; ``product`` says
        how the rows meet the output weight (see ``products``)."""
        raise NotImplementedError

    def draft_to_target(self, draft_ids: Tensor) -> Tensor:
        """Draft-vocabulary ids -> target ids (identity unless EAGLE-3 has a reduced vocab)."""
        return draft_ids

    def forward(
        self,
        features: Tensor,
        tokens: Tensor,
        positions: Tensor,
        past: list[KV] | None,
        mask: Tensor,
    ) -> tuple[Tensor, list[KV]]:
        """features [B,S,H], tokens [B,S], positions [B,S], past per layer, mask [B|1,S,P+S].

        Returns the output features [B,S,H] and per layer the new (keys, values) [B,kvH,S,D].
        """
        raise NotImplementedError


class Eagle1Head(DraftHead):
    def __init__(self, config: HeadConfig, target: TargetParts, own_embedding: bool) -> None:
        super().__init__(config, target, own_embedding)
        h = config.hidden_size
        self.fc = nn.Linear(2 * h, h, bias=config.bias)
        self.layers = nn.ModuleList(
            Eagle1Layer(config, first=i == 0) for i in range(config.num_hidden_layers)
        )

    def project_target_features(self, features: Tensor) -> Tensor:
        return features

    def logits(self, hidden: Tensor, product: RowProduct = F_LINEAR) -> Tensor:
        lm_head = self._target.lm_head
        if lm_head is None:
            raise ValueError("an EAGLE-1 head needs the target's lm_head (TargetParts.lm_head)")
        return product(lm_head, hidden)

    def forward(self, features, tokens, positions, past, mask):
        x = self.fc(torch.cat((self.embed(tokens).to(features.dtype), features), dim=-1))
        rope = self.rotary(positions, x.dtype)
        new_kv = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, rope, None if past is None else past[i], mask)
            new_kv.append(kv)
        return x, new_kv


class Eagle3Head(DraftHead):
    d2t: Tensor  # [Vd] long, draft id -> offset to its target id (buffer, reduced vocab only)
    t2d: Tensor  # [V] bool, target ids the draft vocabulary holds (buffer, reduced vocab only)

    def __init__(self, config: HeadConfig, target: TargetParts, own_embedding: bool) -> None:
        super().__init__(config, target, own_embedding)
        h = config.hidden_size
        self.fc = nn.Linear(config.feature_width, h, bias=False)
        self.midlayer = Eagle3Layer(config)
        self.norm = RMSNorm(h, config.rms_norm_eps)
        self.lm_head = nn.Linear(h, config.draft_vocab, bias=False)
        self.reduced_vocab = config.draft_vocab != config.vocab_size
        if self.reduced_vocab:
            self.register_buffer("d2t", torch.zeros(config.draft_vocab, dtype=torch.long))
            self.register_buffer("t2d", torch.zeros(config.vocab_size, dtype=torch.bool))

    def project_target_features(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def logits(self, hidden: Tensor, product: RowProduct = F_LINEAR) -> Tensor:
        return product(self.lm_head, self.norm(hidden))

    def draft_to_target(self, draft_ids: Tensor) -> Tensor:
        if not self.reduced_vocab:
            return draft_ids
        return draft_ids + self.d2t[draft_ids]

    def forward(self, features, tokens, positions, past, mask):
        embeds = self.embed(tokens).to(features.dtype)
        rope = self.rotary(positions, features.dtype)
        x, kv = self.midlayer(embeds, features, rope, None if past is None else past[0], mask)
        return x, [kv]


def build_head(config: HeadConfig, target: TargetParts, own_embedding: bool) -> DraftHead:
    """A freshly initialised head of the configured variant."""
    cls = Eagle3Head if config.variant == "eagle3" else Eagle1Head
    return cls(config, target, own_embedding)
