"""The decode loop: one generator serves EAGLE and plain decoding, streaming or not.

Each step the proposer offers a tree whose root is the last token the target produced; the
target verifies it in one forward; the longest matching chain is accepted, the cache compacted
to it, and the target's own next token (the bonus) becomes the next root. Plain decoding is the
same loop with a proposer that offers the root alone, so both run through the same target
calls, masks and cache (a fair baseline).

Counting: ``new_tokens`` is the number of generated tokens (an EOS token included, nothing
after it: ``stop_point``, which the evaluation and data regeneration cut their answers with
too); ``steps`` counts target forward passes, the prefill included, so plain decoding has
tokens/steps = 1 and the mean acceptance length is tau = new_tokens / steps.

Settings travel with the call: ``GenerationConfig`` holds the sampling (``SamplingParams``),
the limits and the tree of one generation (the tree picks the proposer, so the caller reads
it; the loop reads the rest). A ``SectionTimer`` gets the prefill as its own section
("prefill"), then each step's "draft", "verify" and "other", so per-step figures need no
second prefill to subtract.

Host syncs: a step reads the device twice (the accepted path's length in ``verify.accept``,
then the emitted ids for the stop point); drafting and tree building never do
(``tests/test_host_syncs.py`` counts them).

Arguments are checked before any work (``decode`` validates when called, not when first
iterated): ``input_ids`` a non-empty integer tensor [1, L] of ids inside the target vocabulary,
``max_new_tokens``/``max_length`` positive integers, sampling settings finite and in range
(``GenerationConfig`` and ``SamplingParams`` check themselves when built). Each error is a
ValueError naming the argument. A target with learned
positions (``TargetModel.position_limit``) caps the output like ``max_length`` does, and draft
trees are cut to the depth that still fits, so EAGLE and plain decoding stop at the same length
with the same tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from eagle.input_checks import POSITIVE_INT
from eagle.model.draft import DynamicTree
from eagle.model.draft_head import weight_of
from eagle.model.lookup import LookupSettings
from eagle.model.tree import StaticTree, TreeBuffers, build_tree, truncate_depth
from eagle.model.verify import SamplingParams, accept, target_choices

if TYPE_CHECKING:  # the loop only calls the adapter; importing it would load transformers
    from eagle.model.target import TargetModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationConfig:
    """How one generation runs, passed with each call: sampling, limits and the draft tree.

    ``max_new_tokens`` counts generated tokens and ``max_length`` prompt + output, both positive
    integers; ``tree`` is the EAGLE tree for this call (None: the model's own; plain decoding
    drafts nothing); ``lookup`` adds drafts from the context to the tree (``lookup.py``):
    ``LookupSettings`` or True (its defaults) turn it on, False off, None leaves it to the
    caller's default (``EaModel``: its own for EAGLE, off for plain decoding). Checked when
    built: a ValueError names the field and its allowed values.
    """

    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int = 512
    max_length: int = 2048
    tree: DynamicTree | StaticTree | None = None
    lookup: LookupSettings | bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sampling, SamplingParams):
            raise ValueError(f"sampling must be a SamplingParams, got {self.sampling!r}")
        for name in ("max_new_tokens", "max_length"):
            object.__setattr__(self, name, int(POSITIVE_INT.check(name, getattr(self, name))))
        if self.tree is not None and not isinstance(self.tree, DynamicTree | StaticTree):
            raise ValueError(f"tree must be a DynamicTree, a StaticTree or None, got {self.tree!r}")
        if self.lookup is True:
            object.__setattr__(self, "lookup", LookupSettings())
        if self.lookup is not None and not isinstance(self.lookup, LookupSettings | bool):
            raise ValueError(
                f"lookup must be a LookupSettings, True (default settings), False (off) or None "
                f"(the model's default), got {self.lookup!r}"
            )

    @classmethod
    def of(
        cls,
        temperature: object = 0.0,
        top_p: object = 0.0,
        top_k: object = 0,
        max_new_tokens: object = 512,
        max_length: object = 2048,
        tree: DynamicTree | StaticTree | None = None,
        lookup: LookupSettings | bool | None = None,
    ) -> GenerationConfig:
        """The config of the original API's keyword arguments (``eagenerate``'s names)."""
        sampling = SamplingParams(temperature, top_p, top_k)  # type: ignore[arg-type]
        return cls(sampling, max_new_tokens, max_length, tree, lookup)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StepResult:
    ids: Tensor  # [1, prompt + new_tokens], prompt and generated ids so far
    new_tokens: int  # generated tokens so far
    steps: int  # target forward passes so far (prefill included)
    accepted: int  # drafted tokens accepted in this step (0 for the prefill)
    finished: bool
    accepted_ranks: Tensor | None = None  # [accepted] score ranks of the accepted nodes
    accepted_from_context: Tensor | None = None  # [accepted] bool: drafted by a context lookup


class Proposer(Protocol):
    @property
    def feature_layers(self) -> tuple[int, ...] | None: ...  # hidden_states the proposer reads

    @property
    def max_tree_depth(self) -> int: ...

    def start(self): ...

    def propose(self, state, features: Tensor | None, next_tokens: Tensor) -> TreeBuffers: ...


class PlainProposer:
    """Offers the root alone: plain one-token-per-step decoding."""

    feature_layers: tuple[int, ...] | None = None
    max_tree_depth = 0

    def start(self) -> None:
        return None

    def propose(self, state, features, next_tokens: Tensor) -> TreeBuffers:
        root = next_tokens[-1:]
        return build_tree(root, torch.full_like(root, -1), 0)


class SectionTimer:
    """Accumulates wall time per section ('prefill', then per step 'draft', 'verify' and
    'other'); synchronises CUDA."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def section(self, name: str, device: torch.device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def _untimed(name: str, device: torch.device):
    yield


def check_input_ids(input_ids: object, vocab_size: int) -> None:
    """input_ids must be an integer tensor [1, L], L >= 1, with ids in 0..vocab_size-1."""
    if not isinstance(input_ids, Tensor):
        raise ValueError(
            f"input_ids must be a torch.Tensor of token ids [1, L], got {type(input_ids).__name__}"
        )
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(
            f"input_ids must have shape [1, L] (batch size 1); got {tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty; give at least one prompt token (e.g. the BOS id)")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(
            f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}"
        )
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"input_ids holds the id {bad}, outside the target vocabulary 0..{vocab_size - 1}"
        )


def token_budget(
    prompt_length: int,
    max_new_tokens: object,
    max_length: object,
    position_limit: int | None = None,
) -> int:
    """How many tokens to generate: max_new_tokens, within max_length and the position limit.

    A target with ``position_limit`` learned positions can read positions 0..limit-1, so it can
    produce tokens up to index ``limit`` (prompt + output <= limit + 1), as plain decoding can.
    """
    max_new_tokens = int(POSITIVE_INT.check("max_new_tokens", max_new_tokens))
    max_length = int(POSITIVE_INT.check("max_length", max_length))
    budget = min(max_new_tokens, max_length - prompt_length)
    if budget < 1:
        raise ValueError(
            f"the prompt has {prompt_length} tokens, which leaves no room under "
            f"max_length={max_length}; raise max_length or shorten the prompt"
        )
    if position_limit is not None and prompt_length + budget - 1 > position_limit:
        room = position_limit + 1 - prompt_length
        if room < 1:
            raise ValueError(
                f"input_ids has {prompt_length} tokens, more than the {position_limit} learned "
                "positions of the target (max_position_embeddings / n_positions); shorten the "
                "prompt"
            )
        logger.warning(
            "the target has %d learned positions: generating at most %d tokens after a "
            "%d-token prompt instead of %d",
            position_limit,
            room,
            prompt_length,
            budget,
        )
        budget = room
    return budget


def decode(
    target: TargetModel,
    proposer: Proposer,
    input_ids: Tensor,
    config: GenerationConfig,
    eos_ids: set[int],
    generator: torch.Generator | None = None,
    timer: SectionTimer | None = None,
) -> Iterator[StepResult]:
    """An iterator of StepResults: one after the prefill and one after every verification step.

    ``config.tree`` is the caller's business (it picks the proposer); the loop reads the
    sampling and the limits. The arguments are checked here, before any work; the target runs
    only while iterating. Gradients are off inside each step only, so a caller that stops
    iterating early leaves no global mode behind, and the yielded ids are ordinary tensors.
    """
    check_input_ids(input_ids, weight_of(target.embed_tokens).shape[0])
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {generator!r}")
    budget = token_budget(
        input_ids.shape[1], config.max_new_tokens, config.max_length, target.position_limit
    )
    limit = target.context_limit
    if limit is not None and input_ids.shape[1] + budget + proposer.max_tree_depth > limit:
        raise ValueError(
            f"this model's sliding-window attention is exact only within {limit} positions; "
            f"prompt ({input_ids.shape[1]}) + max_new_tokens ({budget}) + tree depth exceeds it"
        )
    run = _Decoding(target, proposer, config.sampling, eos_ids, generator, timer)
    return _steps(run, input_ids, budget)


def _steps(run: _Decoding, input_ids: Tensor, budget: int) -> Iterator[StepResult]:
    step = run.prefill(input_ids, budget)
    while True:
        yield step
        if step.finished:
            return
        step = run.step()


class _Decoding:
    """The state of one generation: ids buffer, target cache, draft state, counters."""

    def __init__(self, target, proposer, params, eos_ids, generator, timer) -> None:
        self.target, self.proposer, self.params = target, proposer, params
        self.eos_ids, self.generator = eos_ids, generator
        self.section = timer.section if timer else _untimed
        self.device = target.device
        self.layers = proposer.feature_layers
        self.position_limit = target.position_limit

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, budget: int) -> StepResult:
        input_ids = input_ids.to(self.device)
        self.prompt, self.budget = input_ids.shape[1], budget
        self.ids = input_ids.new_empty(1, self.prompt + budget)
        self.ids[:, : self.prompt] = input_ids
        self.cache = self.target.new_cache()
        with self.section("prefill", self.device):
            out = self.target.prefill(input_ids, self.cache, self.layers)
            first = target_choices(out.logits, self.params, self.generator)
        self.ids[0, self.prompt] = first[0]
        self.new_tokens, self.steps, self.past = 1, 1, self.prompt
        self.state = self.proposer.start()
        self.features, self.next_tokens = out.features, torch.cat((input_ids[0, 1:], first))
        finished = int(first[0]) in self.eos_ids or budget == 1
        return StepResult(self.ids[:, : self.prompt + 1], 1, 1, 0, finished)

    @torch.no_grad()
    def step(self) -> StepResult:
        target, device = self.target, self.device
        with self.section("draft", device):
            tree = self.proposer.propose(self.state, self.features, self.next_tokens)
            if self.position_limit is not None:  # node positions are past + depth
                tree = truncate_depth(tree, self.position_limit - 1 - self.past)
        with self.section("verify", device):
            out = target.forward_tree(
                tree.tokens, tree.depth, tree.mask, self.cache, self.past, self.layers
            )
        with self.section("other", device):
            choices = target_choices(out.logits, self.params, self.generator)
            result = accept(tree.tokens, tree.parents, tree.mask, tree.depth, choices)
            emitted = torch.cat((tree.tokens[result.path[1:]], result.bonus[None]))
            room = self.budget - self.new_tokens
            count, stopped = stop_point(emitted.tolist(), self.eos_ids, room)
            finished = stopped or count == room
            target.keep(self.cache, self.past, result.path)
            self.past += result.path.shape[0]
            start = self.prompt + self.new_tokens
            self.ids[0, start : start + count] = emitted[:count]
            self.new_tokens += count
            self.steps += 1
            if out.features is not None:
                self.features = out.features[result.path]
            self.next_tokens = emitted
        accepted = result.path[1:]
        ranks = None if tree.rank is None else tree.rank[accepted]
        from_context = None if tree.from_context is None else tree.from_context[accepted]
        return StepResult(
            self.ids[:, : self.prompt + self.new_tokens],
            self.new_tokens,
            self.steps,
            result.num_accepted,
            finished,
            ranks,
            from_context,
        )


def stop_point(
    tokens: Sequence[int], eos_ids: Collection[int], room: int | None = None
) -> tuple[int, bool]:
    """(how many of ``tokens`` to keep, whether they end with an EOS id).

    The tokens are kept through the first EOS id, which counts as generated; nothing after it,
    and at most ``room`` of them (None: no limit). The one place that cuts generated ids at an
    EOS: the decode loop, the evaluation methods and the data regeneration all call it.
    """
    limit = len(tokens) if room is None else min(len(tokens), room)
    for i in range(limit):
        if tokens[i] in eos_ids:
            return i + 1, True
    return limit, False
