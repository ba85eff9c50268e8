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
    """Yield a StepResult after the prefill and after every verification step."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(
            f"input_ids must have shape [1, L] (batch size 1); got {tuple(input_ids.shape)}"
        )
    prompt = input_ids.shape[1]
    budget = token_budget(prompt, max_new_tokens, max_length)
    limit = target.context_limit
    if limit is not None and prompt + budget + proposer.max_tree_depth > limit:
        raise ValueError(
            f"this model's sliding-window attention is exact only within {limit} positions; "
            f"prompt ({prompt}) + max_new_tokens ({budget}) + tree depth exceeds it"
        )
    device = target.device
    section = timer.section if timer else _untimed
    input_ids = input_ids.to(device)
    ids = input_ids.new_empty(1, prompt + budget)
    ids[:, :prompt] = input_ids
    layers = proposer.feature_layers
    cache = target.new_cache()

    with section("verify", device):
        out = target.prefill(input_ids, cache, layers)
        first = target_choices(out.logits, params, generator)
    ids[0, prompt] = first[0]
    new_tokens, steps = 1, 1
    finished = int(first[0]) in eos_ids or budget == 1
    yield StepResult(ids[:, : prompt + 1], 1, 1, 0, finished)
    if finished:
        return

    state = proposer.start()
    features, next_tokens, past = out.features, torch.cat((input_ids[0, 1:], first)), prompt
    while True:
        with section("draft", device):
            tree = proposer.propose(state, features, next_tokens)
        with section("verify", device):
            out = target.forward_tree(tree.tokens, tree.depth, tree.mask, cache, past, layers)
        with section("other", device):
            choices = target_choices(out.logits, params, generator)
            result = accept(tree.tokens, tree.parents, tree.mask, tree.depth, choices)
            target.keep(cache, past, result.path)
            past += result.path.shape[0]
            emitted = torch.cat((tree.tokens[result.path[1:]], result.bonus[None]))
            count, finished = _stop_point(emitted.tolist(), eos_ids, budget - new_tokens)
            ids[0, prompt + new_tokens : prompt + new_tokens + count] = emitted[:count]
            new_tokens += count
            steps += 1
            if out.features is not None:
                features = out.features[result.path]
            next_tokens = emitted
        ranks = None if tree.rank is None else tree.rank[result.path[1:]]
        yield StepResult(
            ids[:, : prompt + new_tokens], new_tokens, steps, result.num_accepted, finished, ranks
        )
        if finished:
            return


def _stop_point(emitted: list[int], eos_ids: set[int], room: int) -> tuple[int, bool]:
    """How many of the emitted tokens to keep (through the first EOS, within room), and stop?"""
    for i, token in enumerate(emitted[:room]):
        if token in eos_ids:
            return i + 1, True
    count = min(len(emitted), room)
    return count, count == room
