"""Drafting: the head catches up on committed positions, then grows a tree of candidates.

State is explicit: ``DraftState`` holds the head's key/value buffer, grown in place (capacity
doubles when full). Tree expansions write their keys/values *past* the committed length, as
scratch that the next round overwrites, so nothing is ever rolled back or copied.

Two tree policies share the head step:
- ``DynamicTree`` (EAGLE-2): top-k children of each frontier node, cumulative log-prob scores,
  the best k candidates become the next frontier, ``depth`` expansions, then the best
  ``total_token - 1`` candidates of all levels form the tree (``tree.select_dynamic_tree``).
- ``StaticTree`` (EAGLE-1): a fixed set of top-k rank paths, filled level by level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eagle.model.draft_head import KV, DraftHead
from eagle.model.products import F_LINEAR, RowProduct
from eagle.model.tree import StaticTree, TreeBuffers, build_tree, select_dynamic_tree


@dataclass(frozen=True)
class DynamicTree:
    """EAGLE-2 tree settings: nodes verified per step (incl. root), expansions, branching."""

    total_token: int = 60
    depth: int = 7
    top_k: int = 10

    def __post_init__(self) -> None:
        for name in ("total_token", "depth", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class KVBuffer:
    """Per-layer keys/values [1, kvH, capacity, D] with ``length`` committed positions."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.num_layers = num_layers
        self.length = 0

    def write(self, kv: list[KV], start: int) -> None:
        """Store new keys/values [1, kvH, S, D] per layer at positions start..start+S."""
        end = start + kv[0][0].shape[2]
        if not self.keys or end > self.keys[0].shape[2]:
            self._grow(kv, end)
        for i, (k, v) in enumerate(kv):
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v

    def view(self, end: int) -> list[KV]:
        return [(k[:, :, :end], v[:, :, :end]) for k, v in zip(self.keys, self.values, strict=True)]

    def _grow(self, kv: list[KV], needed: int) -> None:
        capacity = max(256, 2 * needed)
        for i, (k, _) in enumerate(kv):
            shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
            new_k, new_v = k.new_empty(shape), k.new_empty(shape)
            if self.keys:
                new_k[:, :, : self.length] = self.keys[i][:, :, : self.length]
                new_v[:, :, : self.length] = self.values[i][:, :, : self.length]
            if len(self.keys) <= i:
                self.keys.append(new_k)
                self.values.append(new_v)
            else:
                self.keys[i], self.values[i] = new_k, new_v


@dataclass
class DraftState:
    cache: KVBuffer
    tree: DynamicTree | StaticTree  # the drafter's tree; a static one on the head's device


class EagleDrafter:
    """Proposes draft trees from a head; the tree shape is a ``DynamicTree`` or ``StaticTree``."""

    def __init__(
        self,
        head: DraftHead,
        tree: DynamicTree | StaticTree,
        feature_layers: tuple[int, ...],
        row_product: RowProduct = F_LINEAR,
    ) -> None:
        self.head = head
        self.tree = tree
        self.feature_layers = feature_layers  # target hidden_states indices the head reads
        self.row_product = row_product  # how the head's logits are multiplied (``products``)

    @property
    def max_tree_depth(self) -> int:
        return self.tree.depth + 1 if isinstance(self.tree, DynamicTree) else self.tree.depth

    def start(self) -> DraftState:
        tree = self.tree
        if isinstance(tree, StaticTree):  # moved once per generation, not in every step
            tree = tree.to(self.head.fc.weight.device)
        return DraftState(KVBuffer(self.head.num_layers), tree)

    def propose(
        self, state: DraftState, features: Tensor | None, next_tokens: Tensor
    ) -> TreeBuffers:
        """features [n, F] of newly committed positions, next_tokens [n] (the last is the root).

        The decode loop passes the target's features whenever ``feature_layers`` names them."""
        if features is None:
            raise ValueError("the EAGLE drafter needs the target's features of the new positions")
        hidden, logits = self._catch_up(state, features, next_tokens)
        root = next_tokens[-1:]
        tree = state.tree
        if isinstance(tree, DynamicTree):
            tokens, parents, rank = self._grow_dynamic(tree, state, hidden, logits)
            minus_one = parents.new_full((1,), -1)
            return build_tree(
                torch.cat((root, tokens)),
                torch.cat((minus_one, parents)),
                self.max_tree_depth,
                torch.cat((minus_one, rank)),
            )
        tokens = self._fill_static(tree, state, hidden, logits, root)
        return TreeBuffers(tokens, tree.parents, tree.mask, tree.node_depth, tree.depth)

    def _catch_up(
        self, state: DraftState, features: Tensor, next_tokens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Run the head over the new pairs; returns the last output feature [H] and its logits."""
        cache, n = state.cache, next_tokens.shape[0]
        start = cache.length
        device = next_tokens.device
        mask = torch.ones(n, start + n, dtype=torch.bool, device=device)
        mask[:, start:] = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        positions = torch.arange(start, start + n, device=device)[None]
        head_features = self.head.project_target_features(features.to(self._dtype))[None]
        past = cache.view(start) if start else None
        out, kv = self.head(head_features, next_tokens[None], positions, past, mask[None])
        cache.write(kv, start)
        cache.length = start + n
        hidden = out[0, -1]
        return hidden, self.head.logits(hidden, self.row_product).float()

    @property
    def _dtype(self) -> torch.dtype:
        return self.head.fc.weight.dtype

    def _tree_step(
        self, state: DraftState, written: int, feats: Tensor, tokens: Tensor, ancestors: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Feed k tree nodes at once. feats [k, H], tokens [k], ancestors [k, written + k] bool.

        The nodes' keys/values are written as scratch after the committed cache. Returns their
        output features [k, H] and log-probs over the draft vocabulary [k, Vd].
        """
        cache, k = state.cache, tokens.shape[0]
        base = cache.length
        mask = torch.cat((ancestors.new_ones(k, base), ancestors), dim=1)
        depth = ancestors.sum(dim=1)  # 1-based depth of each fed node among the tree entries
        positions = (base + depth - 1)[None]
        out, kv = self.head(
            feats[None], tokens[None], positions, cache.view(base + written), mask[None]
        )
        cache.write(kv, base + written)
        return out[0], torch.log_softmax(self.head.logits(out[0], self.row_product).float(), dim=-1)

    def _grow_dynamic(
        self, tree: DynamicTree, state: DraftState, hidden: Tensor, logits: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = tree.top_k
        log_probs = torch.log_softmax(logits, dim=-1)
        scores, draft_ids = torch.topk(log_probs, k)
        tokens = self.head.draft_to_target(draft_ids)
        all_scores, all_tokens = [scores], [tokens]
        all_parents = [torch.full((k,), -1, dtype=torch.long, device=tokens.device)]
        frontier = torch.arange(k, device=tokens.device)  # candidate index of each frontier node
        feats = hidden.expand(k, -1)
        ancestors = torch.zeros(k, 0, dtype=torch.bool, device=tokens.device)
        eye = torch.eye(k, dtype=torch.bool, device=tokens.device)
        for level in range(tree.depth):
            ancestors = torch.cat((ancestors, eye), dim=1)
            out, child_logp = self._tree_step(state, level * k, feats, tokens, ancestors)
            child_scores, child_ids = torch.topk(child_logp, k)  # [k, k]
            cumulative = (scores[:, None] + child_scores).flatten()
            child_tokens = self.head.draft_to_target(child_ids).flatten()
            offset = sum(s.shape[0] for s in all_scores)
            all_scores.append(cumulative)
            all_tokens.append(child_tokens)
            all_parents.append(frontier.repeat_interleave(k))
            best = torch.topk(cumulative, k).indices
            row = best // k
            scores, tokens, frontier = cumulative[best], child_tokens[best], offset + best
            feats, ancestors = out[row], ancestors[row]
        return select_dynamic_tree(
            torch.cat(all_scores),
            torch.cat(all_tokens),
            torch.cat(all_parents),
            tree.total_token - 1,
        )

    def _fill_static(
        self, tree: StaticTree, state: DraftState, hidden: Tensor, logits: Tensor, root: Tensor
    ) -> Tensor:
        device = root.device
        parents, ranks = tree.parents, tree.ranks
        tokens = root.new_zeros(tree.size)
        tokens[0] = root[0]
        outputs = hidden.new_zeros(tree.size, hidden.shape[-1])
        outputs[0] = hidden
        candidates = root.new_zeros(tree.size, tree.max_rank)  # top-k target ids per node
        candidates[0] = self.head.draft_to_target(torch.topk(logits, tree.max_rank).indices)
        fed = torch.zeros(0, dtype=torch.long, device=device)  # nodes whose keys are in scratch
        for level, nodes in enumerate(tree.level_nodes):
            tokens[nodes] = candidates[parents[nodes], ranks[nodes]]
            if level == tree.depth - 1:
                break
            fed = torch.cat((fed, nodes))
            ancestors = tree.mask[nodes][:, fed]
            out, logp = self._tree_step(
                state,
                fed.shape[0] - nodes.shape[0],
                outputs[parents[nodes]],
                tokens[nodes],
                ancestors,
            )
            outputs[nodes] = out
            candidates[nodes] = self.head.draft_to_target(torch.topk(logp, tree.max_rank).indices)
        return tokens
