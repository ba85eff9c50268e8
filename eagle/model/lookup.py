"""Drafts from the context: n-gram continuations of the text so far, as branches of the tree.

Prompt lookup decoding drafts the tokens that followed the last occurrence of the sequence's
current suffix (an n-gram) earlier in the context. It costs no model call, and it drafts far
deeper than a one-layer head wherever an answer copies its prompt or itself (extraction, code
editing, summaries, lists). Here its continuations join the EAGLE tree as extra branches, so one
target forward verifies both and the longest accepted chain wins:

- ``ContextIndex`` keeps, for every n-gram of the context (n in ``LookupSettings.ngram_sizes``),
  the positions where it ended, updated with each step's new tokens only (no rescan);
  ``continuations`` returns up to ``matches`` distinct continuations of the current suffix,
  longest n-gram first, most recent occurrence first.
- ``merge_chains`` is the pure tree operation: each continuation is walked down from the root
  through nodes that already carry its tokens (shared with the head's tree, so nothing is
  verified twice) and the rest is appended as a chain. Siblings stay distinct and every token is
  a deterministic function of the context, which is all ``verify.accept`` needs to stay
  lossless, greedy and sampled alike.
- ``ContextProposer`` wraps any proposer (the EAGLE drafter, or ``PlainProposer`` for lookup on
  its own) and adds the branches to the tree it proposes. When nothing matches it returns the
  base proposer's tree unchanged, so the step costs what the base step costs plus the index
  update (``tests/test_lookup.py`` measures it).

The index sees the tokens the decode loop feeds its proposer: the prompt from its second token
on (the loop passes next-token pairs, which start at the second prompt token) and everything
generated. Reading them is one host copy per step, and a merge reads the head's tree in one
more (on a GPU, two device syncs per step beyond the loop's own when lookup is on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from eagle.input_checks import POSITIVE_INT
from eagle.model.tree import TreeBuffers, build_tree


@dataclass(frozen=True)
class LookupSettings:
    """How drafts are taken from the context.

    ``max_tokens``: most tokens one continuation drafts (the depth of a lookup branch);
    ``min_ngram``..``max_ngram``: suffix lengths that are matched, the longest tried first;
    ``matches``: most distinct continuations added per step. Checked when built.
    """

    max_tokens: int = 10
    min_ngram: int = 2
    max_ngram: int = 4
    matches: int = 1

    def __post_init__(self) -> None:
        for name in ("max_tokens", "min_ngram", "max_ngram", "matches"):
            object.__setattr__(self, name, int(POSITIVE_INT.check(name, getattr(self, name))))
        if self.min_ngram > self.max_ngram:
            raise ValueError(
                f"min_ngram ({self.min_ngram}) must be <= max_ngram ({self.max_ngram})"
            )

    @property
    def ngram_sizes(self) -> range:
        return range(self.max_ngram, self.min_ngram - 1, -1)  # longest first


class ContextIndex:
    """The context's tokens and, per n-gram, the positions of its last token (oldest first).

    ``extend`` costs O(new tokens x n-gram sizes); ``continuations`` O(n-gram sizes x matches).
    Each n-gram keeps its ``keep`` most recent end positions.
    """

    def __init__(self, settings: LookupSettings, keep: int | None = None) -> None:
        self.settings = settings
        self.keep = max(settings.matches, 1) + 1 if keep is None else keep
        self.tokens: list[int] = []
        self.ends: dict[tuple[int, ...], list[int]] = {}

    def extend(self, new_tokens: Sequence[int]) -> None:
        tokens, ends = self.tokens, self.ends
        for token in new_tokens:
            tokens.append(int(token))
            end = len(tokens) - 1
            for n in self.settings.ngram_sizes:
                if end + 1 < n:
                    continue
                positions = ends.setdefault(tuple(tokens[end - n + 1 : end + 1]), [])
                positions.append(end)
                if len(positions) > self.keep:
                    del positions[0]

    def continuations(self) -> list[list[int]]:
        """Up to ``matches`` distinct continuations (each 1..max_tokens tokens) of the suffix."""
        tokens, settings = self.tokens, self.settings
        end = len(tokens) - 1
        found: list[list[int]] = []
        for n in settings.ngram_sizes:
            if end + 1 < n:
                continue
            for position in reversed(self.ends.get(tuple(tokens[end - n + 1 :]), ())):
                if position == end:  # the suffix itself
                    continue
                continuation = tokens[position + 1 : position + 1 + settings.max_tokens]
                if continuation and continuation not in found:
                    found.append(continuation)
                    if len(found) == settings.matches:
                        return found
        return found


def merge_chains(tree: TreeBuffers, chains: Sequence[Sequence[int]]) -> TreeBuffers:
    """``tree`` with each chain of token ids added as a branch from the root.

    A chain follows existing nodes while they carry its tokens and is appended from the first
    token that no child carries, so siblings stay distinct and parents come before children.
    New nodes have rank -1 (no head score) and ``from_context`` True. Returns ``tree`` itself
    when the chains add no node.
    """
    # one device-to-host copy for the three buffers
    tokens, parents, depth = torch.stack((tree.tokens, tree.parents, tree.depth)).tolist()
    child = {(p, t): i for i, (p, t) in enumerate(zip(parents, tokens, strict=True)) if p >= 0}
    added = 0
    max_depth = tree.max_depth
    for chain in chains:
        node = 0
        for token in chain:
            nxt = child.get((node, token))
            if nxt is None:
                nxt = len(tokens)
                tokens.append(int(token))
                parents.append(node)
                depth.append(depth[node] + 1)
                child[(node, int(token))] = nxt
                added += 1
            node = nxt
        max_depth = max(max_depth, depth[node])
    if added == 0:
        return tree
    device = tree.tokens.device
    new_tokens = torch.tensor(tokens, dtype=tree.tokens.dtype, device=device)
    new_parents = torch.tensor(parents, dtype=tree.parents.dtype, device=device)
    rank = None
    if tree.rank is not None:
        rank = torch.cat((tree.rank, tree.rank.new_full((added,), -1)))
    old = tree.from_context
    old = torch.zeros_like(tree.tokens, dtype=torch.bool) if old is None else old
    from_context = torch.cat((old, old.new_ones(added)))
    merged = build_tree(new_tokens, new_parents, max_depth, rank)
    return TreeBuffers(
        merged.tokens, merged.parents, merged.mask, merged.depth, max_depth, rank, from_context
    )


def merge_chains_reference(tree: TreeBuffers, chains: Sequence[Sequence[int]]) -> TreeBuffers:
    """Slow reference of ``merge_chains``: the union of the tree's root-to-node token paths and
    the chains' prefixes, as a trie in first-seen order, mask by walking parents."""
    from eagle.model.tree import ancestor_mask_reference

    paths: list[tuple[int, ...]] = []
    for node in range(tree.size):
        path, i = [], node
        while i > 0:
            path.append(int(tree.tokens[i]))
            i = int(tree.parents[i])
        paths.append(tuple(reversed(path)))
    seen = set(paths)
    for chain in chains:
        for d in range(1, len(chain) + 1):
            prefix = tuple(int(t) for t in chain[:d])
            if prefix not in seen:
                seen.add(prefix)
                paths.append(prefix)
    index = {p: i for i, p in enumerate(paths)}
    tokens = [int(tree.tokens[0])] + [p[-1] for p in paths[1:]]
    parents = [-1] + [index[p[:-1]] for p in paths[1:]]
    parents_t = torch.tensor(parents)
    mask = ancestor_mask_reference(parents_t)
    return TreeBuffers(
        torch.tensor(tokens), parents_t, mask, mask.sum(1) - 1, max(len(p) for p in paths)
    )


@dataclass
class LookupState:
    base: Any  # the wrapped proposer's state
    index: ContextIndex


class ContextProposer:
    """A proposer whose trees are ``base``'s plus the context's continuations."""

    def __init__(self, base: Any, settings: LookupSettings) -> None:
        self.base = base
        self.settings = settings

    @property
    def feature_layers(self) -> tuple[int, ...] | None:
        return self.base.feature_layers

    @property
    def max_tree_depth(self) -> int:
        return max(self.base.max_tree_depth, self.settings.max_tokens)

    def start(self) -> LookupState:
        return LookupState(self.base.start(), ContextIndex(self.settings))

    def propose(
        self, state: LookupState, features: Tensor | None, next_tokens: Tensor
    ) -> TreeBuffers:
        tree = self.base.propose(state.base, features, next_tokens)
        return self.add_context(state.index, tree, next_tokens)

    def add_context(
        self, index: ContextIndex, tree: TreeBuffers, next_tokens: Tensor
    ) -> TreeBuffers:
        """``tree`` with the context's continuations, once ``index`` has read ``next_tokens``."""
        index.extend(next_tokens.tolist())
        chains = index.continuations()
        return merge_chains(tree, chains) if chains else tree
