"""The one module that reaches into transformers: the target model adapter.

Any decoder-only ``AutoModelForCausalLM`` is driven through public hooks only:

- a 4D attention mask ``[1, 1, N, past + N]`` for tree verification (bool for sdpa, additive
  float for eager, whose bool handling is silently wrong);
- explicit ``position_ids`` (tree node position = committed length + depth);
- a ``DynamicCache`` whose per-layer key/value tensors are compacted to the accepted path;
- ``output_hidden_states`` for the draft features (EAGLE-1: the post-norm last state,
  ``hidden_states[-1]``; EAGLE-3: three intermediate states concatenated).

Attention implementations that cannot take a tensor tree mask (flex, flash) are converted to
sdpa at load time with a warning; models that still ignore the mask are caught by a probe that
compares a tree forward with sequential forwards, so the failure is an error, never wrong text.
Sliding-window attention is only correct while the whole sequence fits in the window, so the
adapter reports that window as a context limit. Models with a learned absolute position table
(GPT-2's ``n_positions``, OPT) cannot take a position past it at all; the adapter reports that
table's size as ``position_limit`` (None for rotary, ALiBi and other unbounded schemes).

Tree logits may bypass the model's ``lm_head`` call: where a timing probe finds that the device
multiplies a few rows faster weight first (``products``), a verify runs the model's decoder
(``get_decoder()``) and applies the ``lm_head`` itself. That path is taken only when a load-time
probe shows the decoder's last state through the ``lm_head`` gives exactly the model's logits, so
models that scale or soft-cap their logits keep the model's own path.

``collect_eos_ids`` reads the stop ids from the model's generation config and the tokenizer;
``translate_legacy_kwargs`` turns the original EAGLE's loading keywords (``torch_dtype``,
``load_in_4bit``/``load_in_8bit``) into the ones transformers 5 takes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel
from transformers.cache_utils import CacheLayerMixin

from eagle.model.draft_head import weight_of
from eagle.model.products import F_LINEAR, RowProduct, measure_row_product
from eagle.model.verify import SamplingParams

logger = logging.getLogger(__name__)

MASKED_ATTENTION = ("sdpa", "eager")


class UnsupportedTargetError(ValueError):
    """The target model cannot be verified with tree attention."""


@dataclass(frozen=True)
class TargetOutput:
    logits: Tensor  # [N, V] float
    features: Tensor | None  # [N, F] in the model dtype, None when no layers were asked for


class TargetModel:
    """A causal LM wrapped for tree verification. Owns no decoding state: caches are arguments."""

    def __init__(
        self,
        model: PreTrainedModel,
        check_tree_attention: bool = True,
        row_product: RowProduct | None = None,
    ) -> None:
        """``row_product``: how tree logits multiply rows by the ``lm_head`` (None: measured on
        this device, see ``products.measure_row_product``); drafters may reuse it."""
        config = model.config
        if getattr(config, "is_encoder_decoder", False):
            raise UnsupportedTargetError(
                "encoder-decoder models are not supported; use a decoder-only LM"
            )
        self.model = model.eval().requires_grad_(False)  # the target is never trained here
        self._ensure_mask_capable_attention()
        self.num_layers = int(config.num_hidden_layers)
        self.context_limit = _sliding_window(config)
        self.position_limit = _learned_position_limit(model)
        self.accepts_logits_to_keep = "logits_to_keep" in _forward_parameters(model)
        self.row_product = self._choose_row_product(row_product)
        # the decoder whose last state the adapter multiplies itself (None: the model does)
        self._decoder = self._plain_logits_decoder() if self.row_product.weight_first else None
        if check_tree_attention:
            self.check_tree_attention()

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> TargetModel:
        """Load ``path`` with ``AutoModelForCausalLM``; the original EAGLE's keywords that
        transformers 5 dropped are translated (``torch_dtype``, ``load_in_4bit``/``load_in_8bit``:
        see ``translate_legacy_kwargs``)."""
        return cls(AutoModelForCausalLM.from_pretrained(path, **translate_legacy_kwargs(kwargs)))

    # -- properties ---------------------------------------------------------------------------

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def attention(self) -> str:
        return self.model.config._attn_implementation

    @property
    def embed_tokens(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @property
    def own_logits(self) -> bool:
        """Whether tree verifies multiply the decoder's last state by the ``lm_head`` here
        (weight first, see ``row_product``) rather than in the model."""
        return self._decoder is not None

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(weight_of(self.lm_head).shape[0])

    # -- forward passes -----------------------------------------------------------------------

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.config)

    def prefill(
        self, input_ids: Tensor, cache: DynamicCache, feature_layers: tuple[int, ...] | None
    ) -> TargetOutput:
        """Causal forward of the prompt [1, n]. Logits of the last position only [1, V]."""
        extra = {"logits_to_keep": 1} if self.accepts_logits_to_keep else {}
        out = self.model(
            input_ids=input_ids,
            cache=cache,
            use_cache=True,
            output_hidden_states=feature_layers is not None,
            **extra,
        )
        return TargetOutput(out.logits[0, -1:].float(), _features(out, feature_layers))

    def forward_tree(
        self,
        tokens: Tensor,
        depth: Tensor,
        tree_mask: Tensor,
        cache: DynamicCache,
        past_length: int,
        feature_layers: tuple[int, ...] | None,
    ) -> TargetOutput:
        """One forward of N tree nodes after ``past_length`` cached positions.

        tokens [N], depth [N], tree_mask [N, N] bool ancestor-or-self. Returns logits [N, V] and
        features [N, F]; the cache grows by N rows (compact it with ``keep``).
        """
        n = tokens.shape[0]
        visible = torch.ones(n, past_length + n, dtype=torch.bool, device=tokens.device)
        visible[:, past_length:] = tree_mask
        inputs = dict(
            input_ids=tokens[None],
            position_ids=(past_length + depth)[None],
            attention_mask=self._as_model_mask(visible),
            cache=cache,
            use_cache=True,
            output_hidden_states=feature_layers is not None,
        )
        if self._decoder is not None and n > 1:
            out = self._decoder(**inputs)
            logits = self.row_product(self.lm_head, out.last_hidden_state[0])
        else:
            out = self.model(**inputs)
            logits = out.logits[0]
        return TargetOutput(logits.float(), _features(out, feature_layers))

    def capture(
        self, input_ids: Tensor, attention_mask: Tensor, feature_layers: tuple[int, ...]
    ) -> Tensor:
        """Features of a right-padded batch, no cache: input_ids/attention_mask [B, L] ->
        [B, L, F] (the given hidden_states concatenated; padded positions are garbage)."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return torch.cat([out.hidden_states[i] for i in feature_layers], dim=-1)

    def forward_rows(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        visible: Tensor,
        cache: DynamicCache,
        feature_layers: tuple[int, ...],
        logits: bool,
    ) -> tuple[Tensor | None, Tensor]:
        """One cached forward of a batch of rows, each with its own positions and visibility.

        input_ids / position_ids [B, n]; visible [B, n, past + n] bool (True: query may attend
        to that cache slot; every query must see at least itself). Returns (logits [B, n, V]
        float, or None when ``logits`` is False) and features [B, n, F] (the given
        hidden_states concatenated, in the model dtype). The cache grows by n slots per row.
        """
        mask = visible[:, None]
        if self.attention == "eager":
            blocked = torch.finfo(self.dtype).min
            mask = torch.zeros(mask.shape, dtype=self.dtype, device=mask.device).masked_fill(
                ~mask, blocked
            )
        extra = {} if logits or not self.accepts_logits_to_keep else {"logits_to_keep": 1}
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=mask,
            cache=cache,
            use_cache=True,
            output_hidden_states=True,
            **extra,
        )
        features = torch.cat([out.hidden_states[i] for i in feature_layers], dim=-1)
        return (out.logits.float() if logits else None), features

    @staticmethod
    def keep_batch_rows(cache: DynamicCache, rows: Tensor) -> None:
        """Keep only the given batch rows [R] (long) of every cache layer, in that order."""
        for layer, keys, values in _key_value_layers(cache):
            layer.keys = keys.index_select(0, rows)
            layer.values = values.index_select(0, rows)

    def generate_batch(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        max_new_tokens: int,
        eos_ids: set[int],
        pad_id: int,
        sampling: SamplingParams | None = None,
    ) -> Tensor:
        """Plain batched generation for data regeneration: left-padded prompts [B, P] ->
        [B, P + new] (transformers' own ``generate``; rows that stopped are padded).
        ``sampling`` warps as the decode loop does (None: greedy)."""
        sampling = SamplingParams() if sampling is None else sampling
        return self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(eos_ids),
            pad_token_id=pad_id,
            **sampling.generate_kwargs(),
        )

    def _as_model_mask(self, visible: Tensor) -> Tensor:
        """bool [N, K] -> the 4D mask [1, 1, N, K] this attention implementation expects."""
        if self.attention == "eager":
            blocked = torch.finfo(self.dtype).min
            return torch.zeros(visible.shape, dtype=self.dtype, device=visible.device).masked_fill(
                ~visible, blocked
            )[None, None]
        return visible[None, None]

    @staticmethod
    def keep(cache: DynamicCache, past_length: int, nodes: Tensor) -> None:
        """Compact the cache to the prefix plus the given tree nodes [A] (in order)."""
        rows = past_length + nodes
        end = past_length + nodes.shape[0]
        for layer, keys, values in _key_value_layers(cache):
            layer.keys = _gather_rows(keys, rows, past_length, end)
            layer.values = _gather_rows(values, rows, past_length, end)

    # -- load-time checks ---------------------------------------------------------------------

    def _choose_row_product(self, given: RowProduct | None) -> RowProduct:
        if given is not None:
            return given
        head = self.lm_head
        return measure_row_product(head.weight) if type(head) is nn.Linear else F_LINEAR

    @torch.inference_mode()
    def _plain_logits_decoder(self) -> nn.Module | None:
        """The model's decoder if ``lm_head(decoder(ids).last_hidden_state)`` equals the model's
        own logits exactly on a probe (not for soft-capped or scaled logits), else None."""
        decoder = self.model.get_decoder()
        if decoder is self.model or type(self.lm_head) is not nn.Linear:
            return None
        ids = torch.arange(1, 4, device=self.device)[None] % self.vocab_size
        out = decoder(input_ids=ids)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None or not torch.equal(
            self.lm_head(hidden), self.model(input_ids=ids).logits
        ):
            logger.info(
                "%s's logits are not its lm_head over the decoder's last state; tree logits "
                "stay with the model",
                type(self.model).__name__,
            )
            return None
        return decoder

    def _ensure_mask_capable_attention(self) -> None:
        impl = self.attention
        if impl in MASKED_ATTENTION:
            return
        logger.warning(
            "attention implementation %r cannot take a tensor tree mask; switching the target to "
            "'sdpa' (supported: %s)",
            impl,
            ", ".join(MASKED_ATTENTION),
        )
        try:
            self.model.set_attn_implementation("sdpa")
        except Exception as err:  # the model has no sdpa path
            raise UnsupportedTargetError(
                f"attention implementation {impl!r} cannot verify draft trees and the model cannot "
                f"switch to sdpa ({err}); load it with attn_implementation='sdpa' or 'eager'"
            ) from err

    @torch.inference_mode()
    def check_tree_attention(self) -> None:
        """Probe: a 3-node tree (root, two children) must match two sequential forwards."""
        device = self.device
        vocab = self.vocab_size
        a, b, c = (torch.tensor([i % vocab], device=device) for i in (1, 2, 3))
        tree_tokens = torch.cat((a, b, c))
        depth = torch.tensor([0, 1, 1], device=device)
        mask = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool, device=device)
        tree = self.forward_tree(tree_tokens, depth, mask, self.new_cache(), 0, None).logits
        sequential = self.model(input_ids=torch.cat((a, c))[None]).logits[0, -1].float()
        scale = sequential.abs().max().clamp(min=1.0)
        tolerance = 1e-3 if self.dtype == torch.float32 else 5e-2
        if ((tree[2] - sequential).abs().max() / scale) > tolerance:
            raise UnsupportedTargetError(
                f"{type(self.model).__name__} with attention {self.attention!r} ignores custom 4D "
                "attention masks, so tree verification would be wrong; try attn_implementation='sdpa'"
            )


BITSANDBYTES_INSTALL = "pip install bitsandbytes (a CUDA GPU is needed to run it)"


def translate_legacy_kwargs(kwargs: dict[str, object]) -> dict[str, object]:
    """``from_pretrained`` keywords of the original EAGLE in the form transformers 5 takes.

    ``torch_dtype`` becomes ``dtype``. ``load_in_4bit=True`` / ``load_in_8bit=True`` (the
    original web UI always passes both, False unless asked) become
    ``quantization_config=BitsAndBytesConfig(load_in_4bit=True)`` (or 8-bit), which is what
    transformers 4 built from them; False values are dropped. Raises ImportError naming the
    package when bitsandbytes is not installed, and ValueError for both at once or with a
    ``quantization_config`` of the caller's own.
    """
    kwargs = dict(kwargs)
    if "torch_dtype" in kwargs:
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    asked = [name for name in ("load_in_4bit", "load_in_8bit") if kwargs.pop(name, False)]
    if not asked:
        return kwargs
    if len(asked) > 1:
        raise ValueError("load_in_4bit and load_in_8bit are exclusive: give one of them")
    if kwargs.get("quantization_config") is not None:
        raise ValueError(f"{asked[0]}=True and quantization_config are exclusive: give one")
    if not bitsandbytes_installed():
        raise ImportError(
            f"{asked[0]}=True quantises the target with bitsandbytes, which is not installed: "
            f"{BITSANDBYTES_INSTALL}; or load the target unquantised (omit {asked[0]})"
        )
    from transformers import BitsAndBytesConfig

    kwargs["quantization_config"] = BitsAndBytesConfig(**{asked[0]: True})
    return kwargs


def bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def collect_eos_ids(model: nn.Module, tokenizer) -> set[int]:
    """Every end-of-sequence id of the generation config and the tokenizer."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return ids


def _key_value_layers(cache: DynamicCache) -> Iterator[tuple[CacheLayerMixin, Tensor, Tensor]]:
    """Each cache layer with its key and value tensors [B, heads, S, head_dim]. Every layer of the
    targets this adapter accepts is an attention layer that has run; anything else is a bug."""
    for layer in cache.layers:
        if not isinstance(layer, CacheLayerMixin) or layer.keys is None or layer.values is None:
            raise TypeError(f"cache layer {type(layer).__name__} holds no key/value tensors")
        yield layer, layer.keys, layer.values


def _gather_rows(x: Tensor, rows: Tensor, start: int, end: int) -> Tensor:
    """x [B, H, L, D]: rows ``rows`` moved to start..end, everything after end dropped."""
    x[:, :, start:end] = x.index_select(2, rows)
    return x[:, :, :end]


def _features(out, feature_layers: tuple[int, ...] | None) -> Tensor | None:
    if feature_layers is None:
        return None
    states = out.hidden_states
    return torch.cat([states[i][0] for i in feature_layers], dim=-1)


def _sliding_window(config) -> int | None:
    """The attention window if any layer uses one (the model is exact only inside it)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    if getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


def _learned_position_limit(model: PreTrainedModel) -> int | None:
    """max_position_embeddings (GPT-2: n_positions) when a learned position table enforces it.

    The table is recognised as an embedding other than the token embedding with that many rows
    (OPT-style tables keep two extra rows for an offset). Rotary models have no such table.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    tokens = model.get_input_embeddings()
    for module in model.modules():
        if (
            isinstance(module, nn.Embedding)
            and module is not tokens
            and limit <= module.num_embeddings <= limit + 2
        ):
            return limit
    return None


def _forward_parameters(model: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)
