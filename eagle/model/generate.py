"""The decode loop: one generator serves EAGLE and plain decoding, streaming or not.

Each step the proposer offers a tree whose root is the last token the target produced; the
target verifies it in one forward; the longest matching chain is accepted, the cache compacted
to it, and the target's own next token (the bonus) becomes the next root. Plain decoding is the
same loop with a proposer that offers the root alone, so both run through the same target
calls, masks and cache (a fair baseline).

Counting: ``new_tokens`` is the number of generated tokens (an EOS token included, nothing
after it); ``steps`` counts target forward passes, the prefill included, so plain decoding has
tokens/steps = 1 and the mean acceptance length is tau = new_tokens / steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from eagle.model.target import TargetModel
from eagle.model.tree import TreeBuffers, build_tree
from eagle.model.verify import SamplingParams, accept, target_choices


@dataclass(frozen=True)
class StepResult:
    ids: Tensor  # [1, prompt + new_tokens], prompt and generated ids so far
    new_tokens: int  # generated tokens so far
    steps: int  # target forward passes so far (prefill included)
    accepted: int  # drafted tokens accepted in this step (0 for the prefill)
    finished: bool
    accepted_ranks: Tensor | None = None  # [accepted] score ranks of the accepted nodes


class Proposer(Protocol):
    feature_layers: tuple[int, ...] | None
    max_tree_depth: int

    def start(self): ...

    def propose(self, state, features: Tensor | None, next_tokens: Tensor) -> TreeBuffers: ...


class PlainProposer:
    """Offers the root alone: plain one-token-per-step decoding."""

    feature_layers = None
    max_tree_depth = 0

    def start(self) -> None:
        return None

    def propose(self, state, features, next_tokens: Tensor) -> TreeBuffers:
        root = next_tokens[-1:]
        return build_tree(root, torch.full_like(root, -1), 0)


class SectionTimer:
    """Accumulates wall time per section ('draft', 'verify', 'other'); synchronises CUDA."""

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


def token_budget(prompt_length: int, max_new_tokens: int, max_length: int) -> int:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    budget = min(max_new_tokens, max_length - prompt_length)
    if budget < 1:
        raise ValueError(
            f"the prompt has {prompt_length} tokens, which leaves no room under "
            f"max_length={max_length}; raise max_length or shorten the prompt"
        )
    return budget


def decode(
    target: TargetModel,
    proposer: Proposer,
    input_ids: Tensor,
    params: SamplingParams,
    max_new_tokens: int,
    max_length: int,
    eos_ids: set[int],
    generator: torch.Generator | None = None,
    timer: SectionTimer | None = None,
) -> Iterator[StepResult]:
    """Yield a StepResult after the prefill and after every verification step.

    Gradients are off inside each step only, so a caller that stops iterating early leaves no
    global mode behind, and the yielded ids are ordinary tensors.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(
            f"input_ids must have shape [1, L] (batch size 1); got {tuple(input_ids.shape)}"
        )
    budget = token_budget(input_ids.shape[1], max_new_tokens, max_length)
    limit = target.context_limit
    if limit is not None and input_ids.shape[1] + budget + proposer.max_tree_depth > limit:
        raise ValueError(
            f"this model's sliding-window attention is exact only within {limit} positions; "
            f"prompt ({input_ids.shape[1]}) + max_new_tokens ({budget}) + tree depth exceeds it"
        )
    run = _Decoding(target, proposer, params, eos_ids, generator, timer)
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

    @torch.no_grad()
    def prefill(self, input_ids: Tensor, budget: int) -> StepResult:
        input_ids = input_ids.to(self.device)
        self.prompt, self.budget = input_ids.shape[1], budget
        self.ids = input_ids.new_empty(1, self.prompt + budget)
        self.ids[:, : self.prompt] = input_ids
        self.cache = self.target.new_cache()
        with self.section("verify", self.device):
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
        with self.section("verify", device):
            out = target.forward_tree(
                tree.tokens, tree.depth, tree.mask, self.cache, self.past, self.layers
            )
        with self.section("other", device):
            choices = target_choices(out.logits, self.params, self.generator)
            result = accept(tree.tokens, tree.parents, tree.mask, tree.depth, choices)
            target.keep(self.cache, self.past, result.path)
            self.past += result.path.shape[0]
            emitted = torch.cat((tree.tokens[result.path[1:]], result.bonus[None]))
            room = self.budget - self.new_tokens
            count, finished = _stop_point(emitted.tolist(), self.eos_ids, room)
            start = self.prompt + self.new_tokens
            self.ids[0, start : start + count] = emitted[:count]
            self.new_tokens += count
            self.steps += 1
            if out.features is not None:
                self.features = out.features[result.path]
            self.next_tokens = emitted
        ranks = None if tree.rank is None else tree.rank[result.path[1:]]
        return StepResult(
            self.ids[:, : self.prompt + self.new_tokens],
            self.new_tokens,
            self.steps,
            result.num_accepted,
            finished,
            ranks,
        )


def _stop_point(emitted: list[int], eos_ids: set[int], room: int) -> tuple[int, bool]:
    """How many of the emitted tokens to keep (through the first EOS, within room), and stop?"""
    for i, token in enumerate(emitted[:room]):
        if token in eos_ids:
            return i + 1, True
    count = min(len(emitted), room)
    return count, count == room
