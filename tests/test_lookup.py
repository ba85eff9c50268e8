"""Drafts from the context (``eagle.model.lookup``): the index, the tree merge, losslessness.

The index is checked against a rescan of the whole context, the merge against a trie built
from root-to-node paths. End to end, EAGLE with lookup branches and lookup alone must equal
transformers' greedy decoding on several architectures, with both head variants and both tree
kinds, on prompts that repeat themselves (so context drafts are offered and accepted); sampled
tokens must follow the target distribution when lookup branches are in the tree, and the same
statistical check must catch a wrong acceptance rule on a merged tree.
"""

from __future__ import annotations

import functools
import random

import pytest
import torch
from helpers import VOCAB, fit_head, greedy_sequences, make_target, random_head
from test_generate import assert_sampling_follows_the_target
from test_verify import chi_square_p_value, wrong_rule

from eagle.model.draft import DynamicTree
from eagle.model.ea_model import EaModel
from eagle.model.generate import GenerationConfig, PlainProposer
from eagle.model.lookup import (
    ContextIndex,
    ContextProposer,
    LookupSettings,
    merge_chains,
    merge_chains_reference,
)
from eagle.model.tree import StaticTree, build_tree, truncate_depth
from eagle.model.verify import SamplingParams, accept, target_choices, warp_logits

# -- the index ----------------------------------------------------------------------------------


def rescanned_continuations(tokens: list[int], settings: LookupSettings) -> list[list[int]]:
    """The definition: scan the whole context for each suffix length, newest match first."""
    found: list[list[int]] = []
    end = len(tokens) - 1
    for n in range(settings.max_ngram, settings.min_ngram - 1, -1):
        if n > len(tokens):
            continue
        suffix = tokens[end - n + 1 :]
        for start in range(end - n, -1, -1):  # match ends before the suffix's end
            if tokens[start : start + n] == suffix:
                continuation = tokens[start + n : start + n + settings.max_tokens]
                if continuation and continuation not in found:
                    found.append(continuation)
                if len(found) == settings.matches:
                    return found
    return found


def test_index_finds_the_newest_longest_match():
    index = ContextIndex(LookupSettings(max_tokens=3, min_ngram=1, max_ngram=2, matches=2))
    index.extend([5, 6, 7, 8, 5, 6, 9, 5, 6])
    # "5 6" occurred twice before: newest first (followed by 9 5 6), then 7 8 5
    assert index.continuations() == [[9, 5, 6], [7, 8, 5]]
    index.extend([1])  # "6 1" never occurred; "1" neither
    assert index.continuations() == []


@pytest.mark.parametrize("seed", range(6))
def test_incremental_index_agrees_with_a_rescan(seed):
    rng = random.Random(seed)
    settings = LookupSettings(
        max_tokens=rng.randint(1, 6),
        min_ngram=1 + seed % 2,
        max_ngram=3,
        matches=rng.randint(1, 3),
    )
    tokens = [rng.randrange(5) for _ in range(120)]
    # keep every occurrence, so the newest-first scan and the index see the same candidates
    index = ContextIndex(settings, keep=len(tokens))
    done = 0
    while done < len(tokens):
        step = rng.randint(1, 5)
        index.extend(tokens[done : done + step])
        done += step
        assert index.continuations() == rescanned_continuations(tokens[:done], settings)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_tokens"):
        LookupSettings(max_tokens=0)
    with pytest.raises(ValueError, match="min_ngram"):
        LookupSettings(min_ngram=3, max_ngram=2)
    with pytest.raises(ValueError, match="lookup must be"):
        GenerationConfig(lookup="yes")  # type: ignore[arg-type]
    assert GenerationConfig(lookup=True).lookup == LookupSettings()


# -- the merge ----------------------------------------------------------------------------------


def _random_tree(rng: random.Random, size: int, vocab: int):
    """A tree with distinct siblings, parents before children, ranks 0..size-2."""
    tokens, parents = [rng.randrange(vocab)], [-1]
    while len(tokens) < size:
        parent = rng.randrange(len(tokens))
        token = rng.randrange(vocab)
        if any(p == parent and t == token for p, t in zip(parents, tokens, strict=True)):
            continue
        tokens.append(token)
        parents.append(parent)
    rank = torch.tensor([-1, *range(size - 1)])
    return build_tree(torch.tensor(tokens), torch.tensor(parents), size - 1, rank)


@pytest.mark.parametrize("seed", range(20))
def test_merge_agrees_with_the_trie_reference(seed):
    rng = random.Random(seed)
    tree = _random_tree(rng, rng.randint(1, 12), vocab=4)
    chains = [
        [rng.randrange(4) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 3))
    ]
    merged = merge_chains(tree, chains)
    reference = merge_chains_reference(tree, chains)
    assert torch.equal(merged.tokens, reference.tokens)
    assert torch.equal(merged.parents, reference.parents)
    assert torch.equal(merged.mask, reference.mask)
    assert torch.equal(merged.depth, reference.depth)
    assert merged.max_depth >= int(merged.depth.max())
    # siblings stay distinct, the head's nodes keep their ranks, new nodes are marked
    pairs = list(zip(merged.parents.tolist(), merged.tokens.tolist(), strict=True))
    assert len(set(pairs)) == len(pairs)
    assert torch.equal(merged.rank[: tree.size], tree.rank)
    if merged is not tree:
        assert merged.from_context.tolist() == [False] * tree.size + [True] * (
            merged.size - tree.size
        )


def test_chains_already_in_the_tree_add_nothing():
    tree = build_tree(torch.tensor([7, 1, 2, 3]), torch.tensor([-1, 0, 0, 1]), 2)
    assert merge_chains(tree, [[1, 3], [2]]) is tree
    merged = merge_chains(tree, [[1, 3, 4]])  # shares 1 -> 3, adds 4 below
    assert merged.tokens.tolist() == [7, 1, 2, 3, 4]
    assert merged.parents.tolist() == [-1, 0, 0, 1, 3]
    assert merged.depth.tolist() == [0, 1, 1, 2, 3]


def test_truncation_keeps_the_context_marks():
    tree = merge_chains(build_tree(torch.tensor([7, 1]), torch.tensor([-1, 0]), 1), [[2, 3, 4]])
    cut = truncate_depth(tree, 1)
    assert cut.tokens.tolist() == [7, 1, 2]
    assert cut.from_context.tolist() == [False, False, True]


def test_without_a_match_the_base_tree_is_returned_unchanged():
    class Fixed:
        feature_layers = None
        max_tree_depth = 2

        def start(self):
            return None

        def propose(self, state, features, next_tokens):
            self.tree = build_tree(next_tokens[-1:], torch.tensor([-1]), 0)
            return self.tree

    base = Fixed()
    proposer = ContextProposer(base, LookupSettings(max_tokens=5))
    assert proposer.max_tree_depth == 5
    state = proposer.start()
    assert proposer.propose(state, None, torch.tensor([1, 2, 3, 4])) is base.tree
    merged = proposer.propose(state, None, torch.tensor([1, 2]))  # "1 2" again: 3 4 1 2
    assert merged.tokens.tolist() == [2, 3, 4, 1, 2]


# -- losslessness: sampling on a merged tree ------------------------------------------------------


def _merged_tree():
    """An EAGLE-like tree (2 -> 1, 4) merged with context chains that share and add nodes."""
    head_tree = build_tree(torch.tensor([0, 2, 4, 1]), torch.tensor([-1, 0, 0, 1]), 2)
    return merge_chains(head_tree, [[2, 5], [3, 0]])  # shares 2, adds 5; adds 3 -> 0


def _first_two_counts(rule, trials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of the emitted tokens of one step on the merged tree, and their exact probs.

    Cells: 0..5 a bonus token at the root (nothing accepted), 6 + 6 * first + second an
    accepted child ``first`` followed by ``second`` (the bonus below it, or its accepted
    child: both are the target's choice at that node).
    """
    tree = _merged_tree()
    gen = torch.Generator().manual_seed(5)
    logits = torch.tensor([[0.0, 0.5, 1.5, -1.0, 1.0, 0.2]]).repeat(tree.size, 1)
    logits[1] = torch.tensor([0.3, 1.2, 0.0, 0.4, -0.5, 0.9])  # below the shared node (2)
    params = SamplingParams(temperature=0.9, top_k=5)
    counts = torch.zeros(42)
    for _ in range(trials):
        if rule == "fast":
            choices = target_choices(logits, params, gen)
            result = accept(tree.tokens, tree.parents, tree.mask, tree.depth, choices)
        else:
            result = rule(tree.tokens, tree.parents, logits, params, gen)
        emitted = [*tree.tokens[result.path[1:]].tolist(), int(result.bonus)]
        cell = emitted[0] if len(emitted) == 1 else 6 + 6 * emitted[0] + emitted[1]
        counts[cell] += 1
    p = warp_logits(logits, params).softmax(-1)
    exact = torch.zeros(42)
    children = {int(t): i for i, t in enumerate(tree.tokens.tolist()) if tree.parents[i] == 0}
    for first in range(6):
        if first not in children:
            exact[first] = p[0, first]
        else:
            exact[6 + 6 * first : 12 + 6 * first] = p[0, first] * p[children[first]]
    return counts, exact


def test_sampling_on_a_tree_with_lookup_branches_reproduces_the_target():
    counts, exact = _first_two_counts("fast", 8000)
    assert chi_square_p_value(counts, exact) > 1e-3


def test_the_check_catches_a_wrong_rule_on_a_tree_with_lookup_branches():
    counts, exact = _first_two_counts(wrong_rule, 8000)
    assert chi_square_p_value(counts, exact) < 1e-6


# -- losslessness end to end -------------------------------------------------------------------

NEW_TOKENS = 40
TREES = {
    "dynamic": DynamicTree(total_token=8, depth=3, top_k=3),
    "static": StaticTree.from_paths([[0], [1], [0, 0], [0, 1], [0, 0, 0]]),
}
LOOKUP = LookupSettings(max_tokens=6, min_ngram=1, max_ngram=3, matches=2)


@functools.cache
def _target(arch: str):
    return make_target(arch)


@functools.cache
def _repeating_prompt(arch: str) -> torch.Tensor:
    """A prompt that holds the target's own greedy continuation of its start, then the start
    again: lookup can draft it."""
    start = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(1))
    continuation = greedy_sequences(_target(arch), start, 12)[:, 6:]
    return torch.cat((start, continuation, start), dim=1)


def _other_prompt() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mixtral"])
def test_eagle_with_lookup_equals_plain_greedy_decoding(arch, variant, tree):
    target = _target(arch)
    prompt = _repeating_prompt(arch)
    # A head taught another prompt: it drafts some tokens right, but not the repeat that only
    # the context holds. A head taught this very prompt can draft every token lookup offers,
    # and on some CPUs it did, leaving no node that only the context drafted.
    head = fit_head(random_head(target, variant), target, _other_prompt(), NEW_TOKENS + 8)
    model = EaModel(target, head, None, TREES[tree], eos_ids=set(), lookup=LOOKUP)
    reference = greedy_sequences(target, prompt, NEW_TOKENS)
    steps = list(model.generate_steps(prompt, max_new_tokens=NEW_TOKENS))
    assert torch.equal(steps[-1].ids, reference)
    from_context = sum(int(s.accepted_from_context.sum()) for s in steps[1:]
                       if s.accepted_from_context is not None)  # fmt: skip
    assert from_context > 0, "no context draft was accepted: the test exercised nothing"
    # the model's default is overridden per call, and plain decoding is never changed by it
    off = list(model.generate_steps(prompt, max_new_tokens=NEW_TOKENS, lookup=False))
    assert torch.equal(off[-1].ids, reference)
    assert all(s.accepted_from_context is None for s in off)
    assert torch.equal(model.naivegenerate(prompt, max_new_tokens=NEW_TOKENS), reference)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_lookup_alone_equals_plain_greedy_decoding(arch):
    target = _target(arch)
    prompt = _repeating_prompt(arch)
    model = EaModel(target, random_head(target, "eagle3"), None, eos_ids=set())
    reference = greedy_sequences(target, prompt, NEW_TOKENS)
    steps = list(
        model.generate_steps(prompt, max_new_tokens=NEW_TOKENS, use_draft=False, lookup=LOOKUP)
    )
    assert torch.equal(steps[-1].ids, reference)
    assert steps[-1].steps < NEW_TOKENS  # the context's drafts were accepted
    assert all(s.accepted_from_context is None or bool(s.accepted_from_context.all())
               for s in steps)  # fmt: skip


def test_lookup_alone_is_plain_decoding_plus_the_context_branches():
    proposer = ContextProposer(PlainProposer(), LOOKUP)
    assert proposer.feature_layers is None
    state = proposer.start()
    tree = proposer.propose(state, None, torch.tensor([3, 4, 5, 3, 4]))
    assert tree.tokens.tolist() == [4, 5, 3, 4]  # root 4, then what followed "3 4"
    assert tree.from_context.tolist() == [False, True, True, True]


def test_sampling_with_lookup_branches_follows_the_target_distribution():
    target = _target("llama")
    prompt = _repeating_prompt("llama")[:, :8]  # short; lookup drafts from its repeats
    prompt = torch.cat((prompt, prompt[:, :3]), dim=1)
    head = fit_head(random_head(target, "eagle3"), target, prompt, 16)
    model = EaModel(target, head, None, DynamicTree(6, 2, 2), eos_ids=set(), lookup=LOOKUP)
    assert_sampling_follows_the_target(model, prompt, torch.Generator().manual_seed(0))
