"""Draft trees: selection of the EAGLE-2 dynamic tree, EAGLE-1 static trees, and tree buffers.

A tree of T nodes is described by ``tokens [T]`` (target ids; node 0 is the root, the token the
target produced last) and ``parents [T]`` (parent node index, -1 for the root). Every builder
here emits nodes so that a parent always comes before its children; the rest of the library
relies on that order (a node's ancestors sorted by index are its root-to-node path).

From ``parents`` follow the buffers the target needs: the ancestor-or-self mask [T, T], node
depths [T] (position id = committed length + depth) and, when asked for, the padded root-to-leaf
paths (the original's "retrieve indices"). All of it is tensor code; loops run over tree
levels, never over nodes. What every decode step calls (``build_tree``,
``select_dynamic_tree``) keeps fixed shapes and never reads a tensor on the host, so on a GPU it
never waits for the device. ``truncate_depth`` (run only when a tree would pass a learned
position limit) and ``tree_paths`` (tests and tools) index with boolean masks, which do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TreeBuffers:
    tokens: Tensor  # [T] long, target token ids; tokens[0] is the root
    parents: Tensor  # [T] long, parent node index, -1 for the root; parents[i] < i
    mask: Tensor  # [T, T] bool, mask[i, j] = node j is node i or one of its ancestors
    depth: Tensor  # [T] long, root = 0
    max_depth: int  # an upper bound of depth, known without reading the tensor
    rank: Tensor | None = None  # [T] dynamic trees: score rank of each drafted node, root -1
    from_context: Tensor | None = None  # [T] bool: nodes only a context lookup drafted

    @property
    def size(self) -> int:
        return self.tokens.shape[0]


def ancestor_mask(parents: Tensor, max_depth: int) -> Tensor:
    """parents [T] (-1 = root) -> bool [T, T], ancestor-or-self; max_depth bounds the depth.

    Repeated squaring of the parent-or-self relation: after s squarings the mask reaches 2**s
    levels up, so ceil(log2(max_depth)) matrix products reach the root. Fixed shapes only, so it
    never waits for the device (``ancestor_mask_reference`` is the node-by-node definition).
    """
    reach = torch.eye(parents.shape[0], dtype=torch.float32, device=parents.device)
    reach.scatter_(1, parents.clamp(min=0)[:, None], 1.0)  # the root is its own parent here
    levels = 1
    while levels < max_depth:
        reach = (reach @ reach).clamp(max=1.0)  # 0/1 sums: exact in any float matmul
        levels *= 2
    return reach > 0


def ancestor_mask_reference(parents: Tensor) -> Tensor:
    """Slow reference of ``ancestor_mask``: walk from every node up to the root."""
    t = parents.shape[0]
    mask = torch.zeros(t, t, dtype=torch.bool)
    for node in range(t):
        ancestor = node
        while ancestor >= 0:
            mask[node, ancestor] = True
            ancestor = int(parents[ancestor])
    return mask.to(parents.device)


def build_tree(
    tokens: Tensor, parents: Tensor, max_depth: int, rank: Tensor | None = None
) -> TreeBuffers:
    """Tree buffers from tokens [T] and parents [T]; max_depth bounds the deepest node's depth."""
    mask = ancestor_mask(parents, max_depth)
    depth = mask.sum(dim=1) - 1
    return TreeBuffers(tokens, parents, mask, depth, max_depth, rank)


def truncate_depth(tree: TreeBuffers, max_depth: int) -> TreeBuffers:
    """The subtree of nodes with depth <= max_depth (>= 0), in the same node order.

    Ancestors are shallower than their descendants, so the kept nodes still form a tree whose
    parents come first. Used to keep tree positions within a target's position limit.
    """
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    if tree.max_depth <= max_depth:
        return tree
    keep = tree.depth <= max_depth
    new_index = torch.cumsum(keep, 0) - 1  # old node index -> new node index (for kept nodes)
    parents = tree.parents[keep]
    parents = torch.where(parents < 0, parents, new_index[parents.clamp(min=0)])
    return TreeBuffers(
        tree.tokens[keep],
        parents,
        tree.mask[keep][:, keep],
        tree.depth[keep],
        max_depth,
        None if tree.rank is None else tree.rank[keep],
        None if tree.from_context is None else tree.from_context[keep],
    )


def tree_paths(tree: TreeBuffers) -> Tensor:
    """Root-to-leaf node indices [num_leaves, max_depth + 1], padded with -1 (retrieve indices)."""
    parents = tree.parents
    is_leaf = torch.ones_like(parents, dtype=torch.bool)
    is_leaf[parents[parents >= 0]] = False
    leaves = is_leaf.nonzero().squeeze(1)
    row, node = tree.mask[leaves].nonzero(as_tuple=True)
    paths = torch.full((leaves.shape[0], tree.max_depth + 1), -1, dtype=torch.long)
    paths = paths.to(parents.device)
    paths[row, tree.depth[node]] = node
    return paths


def select_dynamic_tree(
    scores: Tensor, tokens: Tensor, parents: Tensor, num_drafted: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the best ``num_drafted`` candidates of an EAGLE-2 expansion.

    scores [C] cumulative log-probabilities, tokens [C], parents [C] (candidate index of the
    parent, -1 for children of the root), candidates listed in generation order (a parent before
    its children). A child never scores above its parent, so a stable sort by score keeps the
    selection ancestor-closed even on ties.

    Returns tokens [N], parents [N] (parent node index, 0 = root) and score ranks [N] of the
    drafted nodes as tree nodes 1..N, in generation order. A tree of the best M < N candidates
    is exactly the nodes of rank < M (used to predict acceptance of smaller trees).
    """
    n = min(num_drafted, scores.shape[0])
    best = torch.sort(scores, descending=True, stable=True).indices[:n]
    keep = torch.sort(best).values
    node_of = torch.zeros_like(parents)
    node_of[keep] = torch.arange(1, n + 1, device=scores.device)
    kept_parents = parents[keep]
    tree_parents = torch.where(kept_parents < 0, 0, node_of[kept_parents.clamp(min=0)])
    rank_of = torch.empty_like(parents)
    rank_of[best] = torch.arange(n, device=scores.device)
    return tokens[keep], tree_parents, rank_of[keep]


@dataclass(frozen=True)
class StaticTree:
    """An EAGLE-1 static tree, given as paths of top-k ranks (e.g. ``[[0], [1], [0, 0], ...]``).

    Node order: the root, then nodes sorted by (depth, path). The per-level index tensors let the
    drafter fill the tree one level at a time.
    """

    paths: tuple[tuple[int, ...], ...]
    parents: Tensor  # [T] parent node index, -1 for the root
    ranks: Tensor  # [T] top-k rank of each node among its parent's candidates (root: 0)
    level_nodes: tuple[Tensor, ...]  # per depth d >= 1: the node indices at depth d
    max_rank: int  # the largest rank + 1: how many candidates to take per parent
    mask: Tensor  # [T, T] ancestor-or-self
    node_depth: Tensor  # [T]

    @property
    def size(self) -> int:
        return self.parents.shape[0]

    @property
    def depth(self) -> int:
        return len(self.level_nodes)

    def to(self, device: torch.device | str) -> StaticTree:
        """The same tree with its index tensors on ``device`` (copied once, not every step)."""
        return StaticTree(
            self.paths,
            self.parents.to(device),
            self.ranks.to(device),
            tuple(nodes.to(device) for nodes in self.level_nodes),
            self.max_rank,
            self.mask.to(device),
            self.node_depth.to(device),
        )

    @classmethod
    def from_paths(cls, paths: list[list[int]] | tuple) -> StaticTree:
        cleaned = sorted({tuple(int(r) for r in p) for p in paths}, key=lambda p: (len(p), p))
        if not cleaned or any(len(p) == 0 or min(p) < 0 for p in cleaned):
            raise ValueError("tree_choices must be non-empty lists of non-negative top-k ranks")
        index = {(): 0} | {p: i + 1 for i, p in enumerate(cleaned)}
        missing = [p for p in cleaned if p[:-1] not in index]
        if missing:
            raise ValueError(
                f"tree_choices is not prefix-closed: the parents of {missing} are absent"
            )
        parents = torch.tensor([-1] + [index[p[:-1]] for p in cleaned])
        ranks = torch.tensor([0] + [p[-1] for p in cleaned])
        depth = max(len(p) for p in cleaned)
        levels = tuple(
            torch.tensor([index[p] for p in cleaned if len(p) == d]) for d in range(1, depth + 1)
        )
        mask = ancestor_mask(parents, depth)
        max_rank = max(p[-1] for p in cleaned) + 1
        return cls(tuple(cleaned), parents, ranks, levels, max_rank, mask, mask.sum(dim=1) - 1)
