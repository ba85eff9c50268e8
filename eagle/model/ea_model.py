"""``EaModel``: the public facade with the original EAGLE API.

    model = EaModel.from_pretrained(base_model_path=..., ea_model_path=..., total_token=60,
                                    depth=7, top_k=10, dtype=torch.bfloat16)
    ids = model.eagenerate(input_ids, temperature=0.0, max_new_tokens=512)
    ids, new_token, idx = model.eagenerate(input_ids, log=True)  # tau = new_token / (idx + 1)

``eagenerate``/``naivegenerate`` and their streaming forms ``ea_generate``/``naive_generate`` are
thin wrappers around ``generate.decode``; they differ only in the proposer they pass. The head
variant (EAGLE-1 or EAGLE-3) is detected from the checkpoint; ``use_eagle3`` is checked against
it. ``tree_choices`` (a list of rank paths or a preset name) selects an EAGLE-1 static tree
instead of the EAGLE-2 dynamic tree.

Each call may bring its own ``GenerationConfig`` (``config=``: sampling, limits and the tree of
that call; the original keyword arguments build one), so nothing is changed on the model to
try another tree. ``base_model``, ``ea_layer``, ``set_tree`` and the ``idx`` of ``log=True``
are the original API's names, kept for its callers; the library itself uses ``target``,
``head``, ``config.tree`` and ``StepResult.steps``.

Arguments are checked before any work: ``from_pretrained`` checks its own before loading
anything (and the tree's branching against the head's draft vocabulary right after loading the
head); the generation methods check theirs before the first target forward (see ``generate``),
and the streaming forms raise when called, not at their first step. Errors are ValueErrors that
name the argument and its allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from eagle.input_checks import POSITIVE_INT, Bound
from eagle.model import presets
from eagle.model.checkpoint import load_head
from eagle.model.defaults import resolve_model_path
from eagle.model.draft import DynamicTree, EagleDrafter
from eagle.model.draft_head import DraftHead, TargetParts, weight_of
from eagle.model.generate import (
    GenerationConfig,
    PlainProposer,
    Proposer,
    SectionTimer,
    StepResult,
    decode,
)
from eagle.model.lookup import ContextProposer, LookupSettings
from eagle.model.target import TargetModel, collect_eos_ids, translate_legacy_kwargs
from eagle.model.tree import StaticTree

if TYPE_CHECKING:
    from eagle.model.autotune import TreeChoice

_LEGACY_DEFAULTS = (0.0, 0.0, 0.0, 512, 2048)  # generate_steps' keyword defaults
TOTAL_TOKEN = Bound(1, integer=True, special=(-1,))  # -1: measure on this device
THRESHOLD = Bound()  # accepted for compatibility, unused: any finite number
# from_pretrained keywords about the target's hub repository that its tokenizer needs too
TOKENIZER_HUB_KWARGS = (
    "revision",
    "token",
    "cache_dir",
    "trust_remote_code",
    "local_files_only",
    "force_download",
    "proxies",
)


class EaModel(nn.Module):
    """A target model, a draft head and a tokenizer, with EAGLE and plain generation."""

    def __init__(
        self,
        target: TargetModel,
        head: DraftHead,
        tokenizer=None,
        tree: DynamicTree | StaticTree | None = None,
        eos_ids: set[int] | None = None,
        lookup: LookupSettings | bool | None = None,
    ) -> None:
        super().__init__()
        self.base_model = target.model
        self.ea_layer = head
        self.target = target
        self.tokenizer = tokenizer
        layers = head.config.default_feature_layers(target.num_layers)
        check_feature_layers(layers, target.num_layers)
        tree = tree or DynamicTree()
        check_tree_fits_head(tree, head)
        self.drafter = EagleDrafter(head, tree, layers, target.row_product)
        self.eos_ids = eos_ids if eos_ids is not None else collect_eos_ids(target.model, tokenizer)
        # the measurements behind total_token=-1, when it was used
        self.tree_choice: TreeChoice | None = None
        # drafts from the context added to EAGLE's trees unless a call says otherwise
        self.lookup = GenerationConfig(lookup=lookup).lookup or None

    @classmethod
    def from_pretrained(
        cls,
        base_model_path: str,
        ea_model_path: str,
        total_token: int = 60,
        depth: int = 7,
        top_k: int = 10,
        threshold: float = 1.0,
        use_eagle3: bool | None = None,
        tree_choices: list[list[int]] | str | None = None,
        lookup: LookupSettings | bool | None = None,
        **kwargs,
    ) -> EaModel:
        """Load the target (``kwargs`` go to its ``from_pretrained``) and the head.

        ``base_model_path`` is a hub id, a local folder, or a registered name such as
        ``smollm2-135m-instruct`` (converted once from the offline wheel, see ``defaults``).

        total_token=-1 measures verification cost and acceptance on this device and picks the
        tree size (see ``autotune``). ``threshold`` is accepted for compatibility and unused.
        ``load_in_4bit``/``load_in_8bit`` and ``torch_dtype`` are translated for transformers 5
        (``target.translate_legacy_kwargs``). The original's first positional parameter is
        ``use_eagle3``; a bool in ``base_model_path``'s place is refused with the keyword form.
        The hub keywords among ``kwargs`` (``revision``, ``token``, ``cache_dir``,
        ``trust_remote_code``, ``local_files_only``, ...: ``TOKENIZER_HUB_KWARGS``) reach the
        tokenizer as well as the target, and those that are not about the target's repository
        (``checkpoint.HEAD_HUB_KWARGS``: not ``revision``) the head's download.
        ``lookup`` (``LookupSettings``, True for its defaults) adds drafts from the context to
        every EAGLE tree by default (``eagle.model.lookup``); a call's ``lookup=`` overrides it.
        """
        from transformers import AutoTokenizer

        if isinstance(base_model_path, bool):  # from_pretrained(True, base, head) in the original
            raise ValueError(
                "from_pretrained's first parameter is base_model_path (the original EAGLE's was "
                "use_eagle3): call from_pretrained(base_model_path=..., ea_model_path=..., "
                "use_eagle3=...) with keywords"
            )
        _check_path("base_model_path", base_model_path)
        _check_path("ea_model_path", ea_model_path)
        total_token = int(TOTAL_TOKEN.check("total_token", total_token))
        depth = int(POSITIVE_INT.check("depth", depth))
        top_k = int(POSITIVE_INT.check("top_k", top_k))
        THRESHOLD.check("threshold", threshold)
        if use_eagle3 is not None and not isinstance(use_eagle3, bool):
            raise ValueError(f"use_eagle3 must be True, False or None, got {use_eagle3!r}")
        lookup = GenerationConfig(lookup=lookup).lookup or None  # checked before loading
        kwargs = translate_legacy_kwargs(kwargs)  # a missing bitsandbytes fails before loading
        auto = total_token == -1
        tree = make_tree(tree_choices, 60 if auto else total_token, depth, top_k)
        base_model_path = resolve_model_path(base_model_path)  # registered names -> local dir
        target = TargetModel.from_pretrained(base_model_path, **kwargs)
        parts = TargetParts(target.embed_tokens, target.lm_head)
        hub = {k: kwargs[k] for k in TOKENIZER_HUB_KWARGS if k in kwargs}
        head = load_head(
            ea_model_path, parts, use_eagle3, dtype=target.dtype, device=target.device, hub=hub
        )
        check_tree_fits_head(tree, head)  # before the tokenizer and the autotune measurements
        tokenizer = AutoTokenizer.from_pretrained(base_model_path, **hub)
        model = cls(target, head, tokenizer, tree, lookup=lookup)
        if auto:
            from eagle.model.autotune import choose_total_token

            choice = choose_total_token(model, depth=depth, top_k=top_k)
            tree = DynamicTree(choice.total_token, depth, top_k)
            model = cls(target, head, tokenizer, tree, model.eos_ids, lookup)
            model.tree_choice = choice
        return model

    def get_tokenizer(self):
        return self.tokenizer

    @property
    def head(self) -> DraftHead:
        """The draft head (``ea_layer`` is its name in the original API)."""
        return self.ea_layer

    @property
    def tree(self) -> DynamicTree | StaticTree:
        """The tree a generation uses unless its ``GenerationConfig`` brings one."""
        return self.drafter.tree

    # -- the original's attributes (SafeAILab/EAGLE eagle/model/ea_model.py @47de7b0, __init__) --

    @property
    def config(self):
        """The target's ``PretrainedConfig``."""
        return self.target.config

    @property
    def hidden_size(self) -> int:
        """Width of the target's last hidden state (its ``lm_head`` input)."""
        return int(weight_of(self.target.lm_head).shape[-1])

    @property
    def vocab_size(self) -> int:
        """Rows of the target's ``lm_head``."""
        return int(weight_of(self.target.lm_head).shape[0])

    @property
    def base_model_name_or_path(self) -> str:
        """Where the target was loaded from (a registered name is its converted folder)."""
        return str(getattr(self.target.config, "_name_or_path", "") or "")

    @property
    def use_eagle3(self) -> bool:
        """Whether the head is an EAGLE-3 head (detected from the checkpoint here)."""
        return self.head.variant == "eagle3"

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        past_key_values=None,
        output_orig: bool = False,
        position_ids: Tensor | None = None,
    ):
        """The target's decoder on ``input_ids`` ``[B, T]``, as the original's ``forward``:
        ``(outputs, hidden_states)``, or ``(outputs, logits, hidden_states)`` with
        ``output_orig``; ``hidden_states`` ``[B, T, H]`` is the last (normed) state and
        ``logits`` ``[B, T, V]`` the ``lm_head`` of it. Runs under ``torch.inference_mode``."""
        with torch.inference_mode():
            outputs = self.base_model.get_decoder()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                cache=past_key_values,  # transformers 5's name for past_key_values
                position_ids=position_ids,
            )
            hidden_states = outputs[0]
            if output_orig:
                return outputs, self.target.lm_head(hidden_states), hidden_states
        return outputs, hidden_states

    def set_tree(self, tree: DynamicTree | StaticTree) -> None:
        """Change the default tree (kept for existing callers; the library itself passes
        ``GenerationConfig(tree=...)`` with each call instead)."""
        self.drafter = self._drafter(tree)

    def _drafter(self, tree: DynamicTree | StaticTree | None) -> EagleDrafter:
        if tree is None or tree is self.drafter.tree:
            return self.drafter
        check_tree_fits_head(tree, self.head)
        return EagleDrafter(self.head, tree, self.drafter.feature_layers, self.target.row_product)

    # -- generation ---------------------------------------------------------------------------

    def generate_steps(
        self,
        input_ids: Tensor,
        temperature: float = 0.0,
        top_p: float = 0.0,
        top_k: float = 0.0,
        max_new_tokens: int = 512,
        max_length: int = 2048,
        use_draft: bool = True,
        generator: torch.Generator | None = None,
        timer: SectionTimer | None = None,
        config: GenerationConfig | None = None,
        lookup: LookupSettings | bool | None = None,
    ) -> Iterator[StepResult]:
        """The decode loop's steps: ids so far, token and step counts, accepted drafts.

        ``config`` (a ``GenerationConfig``: sampling, limits, the tree and the lookup of this
        call) replaces the keyword arguments ``temperature`` .. ``max_length`` and ``lookup``,
        which then must stay at their defaults. ``lookup`` None means the model's default for
        EAGLE (``from_pretrained(lookup=...)``) and off for plain decoding; with
        ``use_draft=False`` and lookup on, the context alone drafts (prompt lookup decoding
        through the same loop). Every argument is checked here, when called; the target runs
        only while iterating.
        """
        legacy = (temperature, top_p, top_k, max_new_tokens, max_length)
        if config is None:
            config = GenerationConfig.of(*legacy, lookup=lookup)
        elif legacy != _LEGACY_DEFAULTS or lookup is not None:
            raise ValueError(
                "give the generation settings either as config=GenerationConfig(...) or as "
                "keyword arguments (temperature, top_p, top_k, max_new_tokens, max_length, "
                "lookup), not both"
            )
        proposer: Proposer = self._drafter(config.tree) if use_draft else PlainProposer()
        settings = config.lookup
        if settings is None:
            settings = self.lookup if use_draft else None
        if isinstance(settings, LookupSettings):
            proposer = ContextProposer(proposer, settings)
        return decode(self.target, proposer, input_ids, config, self.eos_ids, generator, timer)

    def _run(self, log: bool, **kwargs):
        last = None
        for last in self.generate_steps(**kwargs):  # noqa: B007 - the last step is the result
            pass
        assert last is not None  # decode yields at least the prefill's step
        return (last.ids, last.new_tokens, last.steps - 1) if log else last.ids

    def eagenerate(
        self,
        input_ids: Tensor,
        temperature: float = 0.0,
        top_p: float = 0.0,
        top_k: float = 0.0,
        max_new_tokens: int = 512,
        max_length: int = 2048,
        log: bool = False,
        is_llama3: bool = False,
        **kwargs,
    ):
        """EAGLE generation. Returns ids [1, L], or (ids, new_token, idx) with ``log=True``."""
        del is_llama3  # every EOS id of the tokenizer and generation config is used anyway
        return self._run(
            log, input_ids=input_ids, temperature=temperature, top_p=top_p, top_k=top_k,
            max_new_tokens=max_new_tokens, max_length=max_length, use_draft=True, **kwargs,
        )  # fmt: skip

    def naivegenerate(
        self,
        input_ids: Tensor,
        temperature: float = 0.0,
        top_p: float = 0.0,
        top_k: float = 0.0,
        max_new_tokens: int = 512,
        max_length: int = 2048,
        log: bool = False,
        is_llama3: bool = False,
        **kwargs,
    ):
        """Plain decoding through the same target calls and cache (the speed baseline)."""
        del is_llama3
        return self._run(
            log, input_ids=input_ids, temperature=temperature, top_p=top_p, top_k=top_k,
            max_new_tokens=max_new_tokens, max_length=max_length, use_draft=False, **kwargs,
        )  # fmt: skip

    def ea_generate(self, input_ids: Tensor, **kwargs) -> Iterator[Tensor]:
        """Streaming EAGLE generation: yields the growing ids [1, L] after every step."""
        kwargs.pop("is_llama3", None)
        kwargs.pop("log", None)
        steps = self.generate_steps(input_ids, use_draft=True, **kwargs)  # checks now
        return (step.ids for step in steps)

    def naive_generate(self, input_ids: Tensor, **kwargs) -> Iterator[Tensor]:
        """Streaming plain decoding: yields the growing ids [1, L] after every token."""
        kwargs.pop("is_llama3", None)
        kwargs.pop("log", None)
        steps = self.generate_steps(input_ids, use_draft=False, **kwargs)  # checks now
        return (step.ids for step in steps)


def make_tree(
    tree_choices: list[list[int]] | str | None, total_token: int, depth: int, top_k: int
) -> DynamicTree | StaticTree:
    if tree_choices is None:
        return DynamicTree(total_token=total_token, depth=depth, top_k=top_k)
    if isinstance(tree_choices, str):
        return StaticTree.from_paths(presets.static_tree(tree_choices))
    if not isinstance(tree_choices, list | tuple) or not all(
        isinstance(path, list | tuple)
        and all(isinstance(r, int) and not isinstance(r, bool) for r in path)
        for path in tree_choices
    ):
        raise ValueError(
            "tree_choices must be a preset name or a list of top-k rank paths such as "
            f"[[0], [1], [0, 0]], got {tree_choices!r}"
        )
    return StaticTree.from_paths(tree_choices)


def check_tree_fits_head(tree: DynamicTree | StaticTree, head: DraftHead) -> None:
    """The tree's branching (top_k, or a static tree's largest rank) within the draft vocab."""
    vocab = head.config.draft_vocab
    if isinstance(tree, DynamicTree) and tree.top_k > vocab:
        raise ValueError(
            f"top_k={tree.top_k} exceeds the head's draft vocabulary ({vocab} tokens); "
            f"choose top_k in 1..{vocab}"
        )
    if isinstance(tree, StaticTree) and tree.max_rank > vocab:
        raise ValueError(
            f"tree_choices uses rank {tree.max_rank - 1}, but the head's draft vocabulary has "
            f"{vocab} tokens (ranks 0..{vocab - 1})"
        )


def check_feature_layers(layers: tuple[int, ...], num_layers: int) -> None:
    """The head's feature layers must be hidden_states indices of the target (0..L or -1..)."""
    bad = [i for i in layers if not -(num_layers + 1) <= i <= num_layers]
    if bad:
        raise ValueError(
            f"the head reads target hidden states {list(layers)} (config.json "
            f"eagle_config.eagle_aux_hidden_state_layer_ids + 1), but the target has only "
            f"indices 0..{num_layers}"
        )


def _check_path(name: str, value: object) -> None:
    if not isinstance(value, str | os.PathLike) or not str(value).strip():
        raise ValueError(
            f"{name} must be a hub id or a local folder (a non-empty str or path), got {value!r}"
        )
