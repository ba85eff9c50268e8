"""Verification of a draft tree against the target's logits.

Tree tokens are chosen deterministically (top-k of the head), and siblings are distinct tokens.
Under that condition the sibling-by-sibling rejection rule of the EAGLE papers (try children in
rank order, accept child x with probability p(x), otherwise zero p(x), renormalise and go on;
if none is accepted draw the bonus token from what is left) is the same as: draw one token
y ~ p at the node; if a child carries y, move to it, otherwise stop and emit y. Child i is
accepted with probability p(x_i) either way, and a stop emits y from p restricted to the
non-children, which is the residual.

So the fast path draws the target's choice at *every* node at once (argmax when greedy, a sample
of the warped distribution otherwise) and accepts the longest root-to-node chain where each
drafted token equals its parent's choice: one rule for greedy and sampling, no loop over nodes.
``accept_reference`` walks the tree node by node with the sibling-rejection rule as the slow
reference; the tests check that both reproduce the target distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eagle.input_checks import NON_NEGATIVE, NON_NEGATIVE_INT, PROBABILITY

GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """Warping of the target distribution, with transformers' logits-processor semantics.

    temperature <= 1e-5 means greedy. top_p in (0, 1) keeps the smallest set of tokens whose
    probability reaches top_p (0 or 1 = off); top_k > 0 keeps the k most likely (0 = off).
    Order: temperature, then top-k, then top-p. Checked when built: every value finite (NaN,
    infinities, bools and strings are refused; an integral float is a valid top_k, as the
    original API's default ``top_k=0.0``); a ValueError names the field and its allowed values.
    """

    temperature: float = 0.0
    top_p: float = 0.0
    top_k: int = 0

    def __post_init__(self) -> None:
        checked = {
            "temperature": float(NON_NEGATIVE.check("temperature", self.temperature)),
            "top_p": float(PROBABILITY.check("top_p", self.top_p)),
            "top_k": int(NON_NEGATIVE_INT.check("top_k", self.top_k)),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature <= GREEDY_TEMPERATURE

    def generate_kwargs(self) -> dict[str, object]:
        """The same warping as ``transformers`` ``generate()`` flags: greedy, or sampling with
        top_p outside (0, 1) and top_k 0 meaning off (their own spellings of "off")."""
        if self.greedy:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p if 0.0 < self.top_p < 1.0 else 1.0,
            "top_k": self.top_k,
        }


def warp_logits(logits: Tensor, params: SamplingParams) -> Tensor:
    """logits [..., V] -> warped logits [..., V] in float32 (removed tokens are -inf)."""
    out = logits.float() / params.temperature
    if params.top_k > 0:
        k = min(int(params.top_k), out.shape[-1])
        kth = torch.topk(out, k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if 0.0 < params.top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= 1.0 - params.top_p
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def target_choices(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> Tensor:
    """logits [T, V] -> the target's token at every node [T]: argmax, or a warped sample."""
    if params.greedy:
        return logits.argmax(dim=-1)
    return sample_rows(warp_logits(logits, params).softmax(dim=-1), generator)


def sample_rows(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """probs [T, V] (non-negative, rows need not sum to 1) -> one draw per row [T].

    Inverse-CDF sampling in float64: u uniform on (0, total], the first index whose cumulative
    mass reaches u. A zero-probability token is never drawn (its cumulative mass equals its
    predecessor's, which is already below u). ``torch.multinomial`` draws the same distribution
    (the tests compare them) but costs an exponential variate per vocabulary entry on CPU:
    about 9 ms for 12 rows of 49,152 against 0.6 ms here (timed with both cores busy). The
    probabilities are converted first and then summed (``.to(float64).cumsum``) rather than
    ``cumsum(dtype=float64)``, which takes a slow path on CPU. Apple's MPS has no float64: there
    the sums are float32 (rounding then shifts a token's mass by up to about 1e-7).
    """
    wide = torch.float32 if probs.device.type == "mps" else torch.float64
    cumulative = probs.to(wide).cumsum(dim=-1)
    draw = torch.rand((probs.shape[0], 1), generator=generator, dtype=wide, device=probs.device)
    u = (1.0 - draw) * cumulative[:, -1:]  # (0, total]: 1 - draw is exact, so u > 0
    return torch.searchsorted(cumulative, u).squeeze(1)


@dataclass(frozen=True)
class Acceptance:
    path: Tensor  # [A + 1] node indices root..last accepted node
    bonus: Tensor  # [] the target's token after the last accepted node

    @property
    def num_accepted(self) -> int:
        """Drafted tokens accepted (the root and the bonus token not counted)."""
        return self.path.shape[0] - 1


def accept(
    tokens: Tensor, parents: Tensor, mask: Tensor, depth: Tensor, choices: Tensor
) -> Acceptance:
    """Longest chain of drafted tokens that match their parent's choice.

    tokens [T], parents [T] (-1 root), mask [T, T] ancestor-or-self, depth [T], choices [T] (the
    target's token at each node). Ties between equally deep chains go to the lower node index.
    One host sync (the path's length); indexing with a 0-d tensor would add one per use.
    """
    matches = tokens == choices[parents.clamp(min=0)]
    matches[0] = True
    chain_ok = ~(mask & ~matches).any(dim=1)
    best = torch.where(chain_ok, depth, -1).argmax(dim=0, keepdim=True)  # [1]
    path = mask[best].nonzero()[:, 1]
    return Acceptance(path=path, bonus=choices[best][0])


def accept_reference(
    tokens: Tensor,
    parents: Tensor,
    logits: Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
) -> Acceptance:
    """Slow reference: walk from the root, trying children in node order (sibling rejection)."""
    node, path = 0, [0]
    while True:
        children = [c for c in range(tokens.shape[0]) if int(parents[c]) == node]
        if params.greedy:
            choice = int(logits[node].argmax())
            hit = [c for c in children if int(tokens[c]) == choice]
            if not hit:
                return Acceptance(torch.tensor(path), torch.tensor(choice))
            node = hit[0]
            path.append(node)
            continue
        probs = warp_logits(logits[node], params).softmax(dim=-1).double()
        accepted = None
        for child in children:
            x = int(tokens[child])
            draw = torch.rand((), generator=generator, dtype=torch.float64, device=probs.device)
            if draw < probs[x]:
                accepted = child
                break
            probs[x] = 0.0
            probs = probs / probs.sum()
        if accepted is None:
            bonus = torch.multinomial(probs, 1, generator=generator)[0]
            return Acceptance(torch.tensor(path), bonus)
        node = accepted
        path.append(node)
