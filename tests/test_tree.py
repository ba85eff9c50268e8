"""Tree building: golden masks, depths and paths on hand-built trees; drafting vs a slow reference."""

from __future__ import annotations

import pytest
import torch
from helpers import VOCAB, make_target, random_head

from eagle.model import presets
from eagle.model.draft import DynamicTree, EagleDrafter
from eagle.model.tree import (
    StaticTree,
    ancestor_mask,
    ancestor_mask_reference,
    build_tree,
    select_dynamic_tree,
    tree_paths,
    truncate_depth,
)

#      0
#    /   \
#   1     2
#   |    / \
#   3   4   5
#   |
#   6
PARENTS = torch.tensor([-1, 0, 0, 1, 2, 2, 3])


def test_mask_depth_and_paths_of_a_hand_built_tree():
    tree = build_tree(torch.arange(7), PARENTS, max_depth=3)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 0, 1, 0, 0, 0, 0],
            [1, 1, 0, 1, 0, 0, 0],
            [1, 0, 1, 0, 1, 0, 0],
            [1, 0, 1, 0, 0, 1, 0],
            [1, 1, 0, 1, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(tree.mask, expected)
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert tree_paths(tree).tolist() == [[0, 2, 4, -1], [0, 2, 5, -1], [0, 1, 3, 6]]


def _random_parents(size: int, seed: int) -> torch.Tensor:
    """A random tree of ``size`` nodes whose parents come first; seed 0 gives a chain."""
    if seed == 0:
        return torch.arange(-1, size - 1)
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(
        [-1] + [int(torch.randint(0, i, (), generator=gen)) for i in range(1, size)]
    )


@pytest.mark.parametrize("size", [1, 2, 3, 9, 17, 60, 130])
def test_ancestor_mask_matches_the_node_by_node_reference(size):
    for seed in range(4):
        parents = _random_parents(size, seed)
        reference = ancestor_mask_reference(parents)
        deepest = int(reference.sum(dim=1).max()) - 1
        for bound in (deepest, deepest + 3):  # max_depth is an upper bound
            assert torch.equal(ancestor_mask(parents, bound), reference), (size, seed, bound)
    assert torch.equal(ancestor_mask_reference(PARENTS), build_tree(PARENTS, PARENTS, 3).mask)


def test_a_static_tree_moves_its_tensors_once():
    tree = StaticTree.from_paths(presets.static_tree("mc_sim_7b_63"))
    moved = tree.to("meta")
    assert moved.paths == tree.paths and moved.max_rank == tree.max_rank
    tensors = [moved.parents, moved.ranks, moved.mask, moved.node_depth, *moved.level_nodes]
    assert all(t.device.type == "meta" for t in tensors)
    assert torch.equal(tree.mask, ancestor_mask_reference(tree.parents))


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 5])
def test_truncating_a_tree_keeps_the_shallow_nodes_in_order(depth):
    tree = build_tree(torch.arange(10, 17), PARENTS, max_depth=3, rank=torch.arange(-1, 6))
    cut = truncate_depth(tree, depth)
    kept = [i for i, d in enumerate([0, 1, 1, 2, 2, 2, 3]) if d <= depth]
    # rebuilt from scratch: the kept nodes, their parents renumbered
    new_of = {old: new for new, old in enumerate(kept)}
    parents = torch.tensor([-1] + [new_of[int(PARENTS[i])] for i in kept[1:]])
    expected = build_tree(torch.tensor(kept) + 10, parents, max_depth=min(depth, 3))
    assert torch.equal(cut.tokens, expected.tokens) and torch.equal(cut.parents, expected.parents)
    assert torch.equal(cut.mask, expected.mask) and torch.equal(cut.depth, expected.depth)
    assert cut.rank.tolist() == [r - 1 for r in kept] and cut.max_depth == min(depth, 3)
    with pytest.raises(ValueError, match="max_depth"):
        truncate_depth(tree, -1)


def test_dynamic_selection_keeps_the_best_candidates_in_generation_order():
    # level 1: a b c (children of the root); level 2: a1 a2 (of a), b1 (of b)
    scores = torch.tensor([-0.1, -0.5, -2.0, -0.3, -1.0, -0.6])
    tokens = torch.tensor([10, 11, 12, 13, 14, 15])
    parents = torch.tensor([-1, -1, -1, 0, 0, 1])
    kept_tokens, kept_parents, ranks = select_dynamic_tree(scores, tokens, parents, 4)
    assert kept_tokens.tolist() == [10, 11, 13, 15]  # a, b, a1, b1
    assert kept_parents.tolist() == [0, 0, 1, 2]  # a1 under node 1 (a), b1 under node 2 (b)
    assert ranks.tolist() == [0, 2, 1, 3]  # by score: a -0.1, a1 -0.3, b -0.5, b1 -0.6


def test_dynamic_selection_is_ancestor_closed_on_ties():
    scores = torch.tensor([0.0, -1.0, 0.0, 0.0])  # a child with log-prob 0 ties its parent
    parents = torch.tensor([-1, -1, 0, 2])
    kept_tokens, kept_parents, _ = select_dynamic_tree(scores, torch.arange(4), parents, 3)
    assert kept_tokens.tolist() == [0, 2, 3]
    assert kept_parents.tolist() == [0, 1, 2]


def test_static_preset_shape():
    tree = StaticTree.from_paths(presets.static_tree("mc_sim_7b_63"))
    assert tree.size == 26 and tree.depth == 5
    assert [len(n) for n in tree.level_nodes] == [4, 8, 8, 3, 2]
    assert tree.max_rank == 4
    assert all(int(tree.parents[i]) < i for i in range(1, tree.size))
    assert presets.static_tree("chain_3") == [[0], [0, 0], [0, 0, 0]]


@pytest.mark.parametrize("paths", [[[0], [0, 1, 0]], [[]], [[-1]]])
def test_static_tree_rejects_bad_paths(paths):
    with pytest.raises(ValueError, match="tree_choices"):
        StaticTree.from_paths(paths)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="eagle1_26"):
        presets.static_tree("nope")


def _reference_dynamic_tree(head, features, next_tokens, settings: DynamicTree):
    """Expand node by node, running the head on each node's explicit chain without a cache."""
    base = head.project_target_features(features)

    def last_output(chain):  # chain: list of (input feature [H], token)
        feats = torch.cat([base] + [f[None] for f, _ in chain])
        tokens = torch.cat([next_tokens] + [torch.tensor([t]) for _, t in chain])
        n = tokens.shape[0]
        mask = torch.ones(n, n, dtype=torch.bool).tril()[None]
        out, _ = head(feats[None], tokens[None], torch.arange(n)[None], None, mask)
        return out[0, -1]

    k = settings.top_k
    root_out = last_output([])
    logp = torch.log_softmax(head.logits(root_out).float(), -1)
    top = torch.topk(logp, k)
    # candidate: (score, token, parent candidate index, chain that produced its input)
    cands = [(float(s), int(t), -1, [(root_out, int(t))]) for s, t in zip(*top, strict=True)]
    frontier = list(range(k))
    for _ in range(settings.depth):
        children = []
        for f in frontier:
            score, _, _, chain = cands[f]
            out = last_output(chain)
            child = torch.topk(torch.log_softmax(head.logits(out).float(), -1), k)
            for s, t in zip(*child, strict=True):
                children.append((score + float(s), int(t), f, [*chain, (out, int(t))]))
        offset = len(cands)
        cands.extend(children)
        order = torch.topk(torch.tensor([c[0] for c in children]), k).indices.tolist()
        frontier = [offset + i for i in order]
    scores = torch.tensor([c[0] for c in cands])
    return select_dynamic_tree(
        scores,
        torch.tensor([c[1] for c in cands]),
        torch.tensor([c[2] for c in cands]),
        settings.total_token - 1,
    )


@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
def test_dynamic_drafting_matches_a_node_by_node_reference(variant):
    target = make_target("llama")
    head = random_head(target, variant)
    settings = DynamicTree(total_token=14, depth=3, top_k=3)
    drafter = EagleDrafter(head, settings, head.config.default_feature_layers(target.num_layers))
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(9, head.config.feature_width, generator=gen)
    next_tokens = torch.randint(0, VOCAB, (9,), generator=gen)
    with torch.no_grad():
        state = drafter.start()
        drafter.propose(state, features[:5], next_tokens[:5])  # a first round fills the cache
        tree = drafter.propose(state, features[5:], next_tokens[5:])  # catch-up + tree
        ref_tokens, ref_parents, _ = _reference_dynamic_tree(head, features, next_tokens, settings)
    assert tree.tokens[0] == next_tokens[-1]
    assert tree.tokens[1:].tolist() == ref_tokens.tolist()
    assert tree.parents[1:].tolist() == ref_parents.tolist()
