"""Acceptance rules: golden edge cases, agreement with the slow reference, and losslessness."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from eagle.model.tree import build_tree
from eagle.model.verify import (
    Acceptance,
    SamplingParams,
    accept,
    accept_reference,
    sample_rows,
    target_choices,
    warp_logits,
)

GREEDY = SamplingParams()

# root 0; children 1 (token 5), 2 (token 6); 3 (token 7) under 1; 4 (token 8) under 2;
# 5 (token 9) under 3
TOKENS = torch.tensor([4, 5, 6, 7, 8, 9])
PARENTS = torch.tensor([-1, 0, 0, 1, 2, 3])


def _accept(choices):
    tree = build_tree(TOKENS, PARENTS, 3)
    return accept(tree.tokens, tree.parents, tree.mask, tree.depth, torch.tensor(choices))


def test_nothing_matches_gives_the_root_and_the_bonus():
    result = _accept([1, 1, 1, 1, 1, 1])
    assert result.path.tolist() == [0] and int(result.bonus) == 1 and result.num_accepted == 0


def test_full_chain_is_accepted_with_the_bonus_of_the_leaf():
    result = _accept([5, 7, 0, 9, 0, 3])
    assert result.path.tolist() == [0, 1, 3, 5] and int(result.bonus) == 3


def test_second_sibling_chain():
    result = _accept([6, 0, 8, 0, 2, 0])
    assert result.path.tolist() == [0, 2, 4] and int(result.bonus) == 2


def test_a_matching_child_under_a_rejected_parent_is_not_accepted():
    # node 3 (token 7) matches node 1's choice, but node 1 (token 5) is rejected by the root
    result = _accept([6, 7, 1, 9, 1, 1])
    assert result.path.tolist() == [0, 2] and int(result.bonus) == 1


def test_equal_depth_tie_goes_to_the_lower_node_index():
    tokens, parents = torch.tensor([0, 1, 1]), torch.tensor([-1, 0, 0])  # duplicate only here
    tree = build_tree(tokens, parents, 1)
    result = accept(tree.tokens, tree.parents, tree.mask, tree.depth, torch.tensor([1, 2, 3]))
    assert result.path.tolist() == [0, 1] and int(result.bonus) == 2


def _random_tree(gen: torch.Generator, size: int, vocab: int):
    parents = torch.tensor(
        [-1] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, size)]
    )
    tokens = torch.zeros(size, dtype=torch.long)
    for node in range(1, size):  # distinct tokens among siblings, as drafters produce
        siblings = [int(tokens[s]) for s in range(1, node) if parents[s] == parents[node]]
        free = [t for t in range(vocab) if t not in siblings]
        tokens[node] = free[int(torch.randint(0, len(free), (1,), generator=gen))]
    return tokens, parents


def test_greedy_fast_path_agrees_with_the_reference_walk():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        tokens, parents = _random_tree(gen, 10, 12)
        logits = torch.randn(10, 12, generator=gen)
        logits[parents[1:], tokens[1:]] += 3.0  # drafted tokens are often the argmax
        tree = build_tree(tokens, parents, 9)
        fast = accept(tokens, parents, tree.mask, tree.depth, target_choices(logits, GREEDY))
        slow = accept_reference(tokens, parents, logits, GREEDY)
        assert fast.path.tolist() == slow.path.tolist()
        assert int(fast.bonus) == int(slow.bonus)


@pytest.mark.parametrize(
    "params", [SamplingParams(0.7), SamplingParams(1.3, top_k=5), SamplingParams(1.0, top_p=0.8)]
)
def test_warping_matches_transformers_processors(params):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    expected = TemperatureLogitsWarper(params.temperature)(None, logits.clone())
    if params.top_k:
        expected = TopKLogitsWarper(params.top_k)(None, expected)
    if params.top_p:
        expected = TopPLogitsWarper(params.top_p)(None, expected)
    assert torch.equal(torch.isinf(warp_logits(logits, params)), torch.isinf(expected))
    assert torch.allclose(warp_logits(logits, params).softmax(-1), expected.softmax(-1), atol=1e-6)


# -- losslessness of sampling -------------------------------------------------------------------


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's test of observed counts against probabilities (cells with tiny mass merged)."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    obs = torch.cat((counts[big], counts[~big].sum()[None]))
    exp = torch.cat((expected[big], expected[~big].sum()[None]))
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), stat / 2.0))


def _emitted_first_two(result: Acceptance, tokens: torch.Tensor) -> tuple[int, int | None]:
    emitted = [*tokens[result.path[1:]].tolist(), int(result.bonus)]
    return emitted[0], emitted[1] if len(emitted) > 1 else None


def wrong_rule(tokens, parents, logits, params, generator):
    """A deliberately wrong variant: the bonus is drawn from p itself, not from the residual."""
    probs = warp_logits(logits[0], params).softmax(-1).double()
    for child in (c for c in range(tokens.shape[0]) if int(parents[c]) == 0):
        if torch.rand((), generator=generator, dtype=torch.float64) < probs[int(tokens[child])]:
            return Acceptance(torch.tensor([0, child]), torch.tensor(0))
    return Acceptance(torch.tensor([0]), torch.multinomial(probs, 1, generator=generator)[0])


def _first_token_counts(rule, trials: int, vocab: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    tokens, parents = torch.tensor([0, 2, 4, 1]), torch.tensor([-1, 0, 0, 1])
    logits = torch.tensor([[0.0, 0.5, 1.5, -1.0, 1.0, 0.2]] * 4)
    params = SamplingParams(temperature=0.9, top_k=5)
    tree = build_tree(tokens, parents, 2)
    counts = torch.zeros(vocab)
    for _ in range(trials):
        if rule == "fast":
            choices = target_choices(logits, params, gen)
            result = accept(tokens, parents, tree.mask, tree.depth, choices)
        else:
            result = rule(tokens, parents, logits, params, gen)
        counts[_emitted_first_two(result, tokens)[0]] += 1
    return counts, warp_logits(logits[0], params).softmax(-1)


@pytest.mark.parametrize("rule", ["fast", accept_reference], ids=["fast", "reference"])
def test_sampling_reproduces_the_target_distribution(rule):
    counts, probs = _first_token_counts(rule, 6000)
    assert chi_square_p_value(counts, probs) > 1e-3


def test_the_statistical_check_rejects_a_wrong_acceptance_rule():
    counts, probs = _first_token_counts(wrong_rule, 6000)
    assert chi_square_p_value(counts, probs) < 1e-6


def test_inverse_cdf_rows_draw_the_given_distribution_and_never_a_zero():
    """sample_rows, the fast sampler, against the probabilities themselves; unnormalised rows
    with zero mass at both ends and inside, and torch.multinomial's counts under the same test."""
    gen = torch.Generator().manual_seed(11)
    weights = torch.tensor([0.0, 3.0, 0.0, 0.5, 1e-4, 6.0, 0.0, 0.25, 0.0])
    rows = weights.expand(40_000, -1)
    drawn = sample_rows(rows, gen)
    counts = torch.bincount(drawn, minlength=weights.shape[0]).double()
    assert counts[weights == 0].sum() == 0
    probs = weights.double() / weights.sum()
    assert chi_square_p_value(counts, probs) > 1e-3
    reference = torch.multinomial(rows, 1, replacement=True, generator=gen).squeeze(1)
    ref_counts = torch.bincount(reference, minlength=weights.shape[0]).double()
    assert chi_square_p_value(ref_counts, probs) > 1e-3


def test_inverse_cdf_rows_each_follow_their_own_row():
    gen = torch.Generator().manual_seed(12)
    probs = torch.eye(5)[[3, 0, 4, 4, 1]]
    assert sample_rows(probs, gen).tolist() == [3, 0, 4, 4, 1]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (SamplingParams(), {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}),
        (
            SamplingParams(0.7, 0.0, 0),
            {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "top_k": 0},
        ),
        (
            SamplingParams(1.0, 0.9, 5),
            {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 5},
        ),
        (
            SamplingParams(1.0, 1.0, 0),
            {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0},
        ),
    ],
)
def test_generate_flags_mean_the_same_warping(params, expected):
    """transformers' generate() flags for the same warping: its "off" spellings differ (top_p
    1.0 where SamplingParams also takes 0), so every caller of generate() goes through this."""
    assert params.generate_kwargs() == expected
