"""Training losses of EAGLE-1 and EAGLE-3 heads: the unrolled "training-time test".

Alignment (the same as inference, ``eagle.model.draft``): pair t of a sample is
``(feature_t, token_{t+1})`` at head position t, and the head's output there predicts
``token_{t+2}``; the target's distribution for that token is ``softmax(lm_head(hidden_{t+1}))``.
Step s > 0 of the unrolled chain starting at pair t feeds the head's own output of step s - 1
with ``token_{t+1+s}`` at position ``t + s`` and predicts ``token_{t+2+s}``. A query of step s
at pair t attends to the step-0 keys of the real pairs <= t and to its own chain's keys of steps
1..s, exactly as a tree node at depth s does during drafting.

Per step s and position t (counted where ``loss_mask[t+2+s]``, i.e. the predicted token is an
assistant token):
- EAGLE-1: ``feature_weight * SmoothL1(out, hidden_{t+1+s})`` (mean over the width)
  ``+ token_weight * CE(softmax(lm_head(hidden_{t+1+s})), lm_head(out))``;
- EAGLE-3: ``CE(p_target restricted to the draft vocabulary and renormalised, head logits)``.
Each step's loss is normalised by its own mask count; the total is ``sum_s step_weight**s *
loss_s``. When the data stores the target's top-K distribution (``topk_ids`` / ``topk_probs``)
the EAGLE-3 target is that distribution restricted to the draft vocabulary and renormalised (a
position whose K tokens all lie outside the draft vocabulary is not counted); with K = V it is
exactly the ``lm_head`` one. Top-1 accuracy compares the head's best token (as a target id) with the target's
argmax over the full vocabulary, which is what greedy verification accepts.

``unrolled_loss`` is the fast path: one head call per step over all positions with a
``[n, (s+1) n]`` mask, and the target distribution computed once, only at the positions some
step reads. ``reference_loss`` is a plain loop over samples, positions and steps that runs each
chain the way the drafter does; tests check that both agree in value and gradient.
``HeadObjective`` is the module that accelerate / DeepSpeed wrap: the head plus its loss, so one
``forward`` returns the loss and the per-step sums for reporting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eagle.model.draft_head import KV, DraftHead, Eagle3Head


@dataclass(frozen=True)
class LossSpec:
    variant: str  # "eagle1" | "eagle3"
    steps: int  # unrolled steps K
    step_weight: float = 0.8
    feature_weight: float = 1.0  # EAGLE-1 only
    token_weight: float = 0.1  # EAGLE-1 only

    @property
    def metrics(self) -> tuple[str, ...]:
        """Per-step sums returned with the loss: mask count, top-1 hits, loss (and parts)."""
        parts = ("feature", "token") if self.variant == "eagle1" else ()
        return ("count", "correct", "loss", *parts)


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor  # scalar, differentiable
    sums: dict[str, Tensor]  # name -> [K] detached sums over the counted positions


@dataclass(frozen=True)
class TargetTable:
    """The target's side of the loss, at the M positions that some step reads."""

    row: Tensor  # [B, W-1] long: table row of position j, -1 where j is not read
    probs: Tensor  # [M, Vd] float: target distribution (over the draft vocabulary)
    best: Tensor  # [M] long: target argmax over the full vocabulary (target ids)
    hidden: Tensor | None  # [M, H] float: the target feature (EAGLE-1 target), or None
    usable: Tensor | None = None  # [B, W-1] bool: rows with a target (None: every read row)


def draft_ids(head: DraftHead) -> Tensor | None:
    """Target ids of the draft vocabulary [Vd], or None when it is the whole vocabulary."""
    if not isinstance(head, Eagle3Head) or not head.reduced_vocab:
        return None
    return torch.arange(head.d2t.shape[0], device=head.d2t.device) + head.d2t


def read_rows(loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    """loss_mask [B, W] -> (need [B, W-1] bool: position j is read, i.e. loss_mask[j+1] and
    j >= 1; row [B, W-1] long: its table row, -1 where not read)."""
    need = loss_mask[:, 1:].clone()
    need[:, 0] = False  # position 0 is never a target (j = t + 1 + s >= 1)
    row = need.flatten().cumsum(0).view_as(need) - 1
    row[~need] = -1
    return need, row


@torch.no_grad()
def target_table(
    lm_head: nn.Module,
    hidden: Tensor,
    loss_mask: Tensor,
    vocab_ids: Tensor | None,
    chunk: int = 2048,
) -> TargetTable:
    """hidden [B, W, H], loss_mask [B, W] -> the table of positions j with loss_mask[j+1]."""
    need, row = read_rows(loss_mask)
    states = hidden[:, :-1][need]
    probs, best = [], []
    for part in states.split(chunk):  # one (possibly empty) part at least
        logits = lm_head(part).float()
        best.append(logits.argmax(-1))
        if vocab_ids is not None:
            logits = logits[:, vocab_ids]
        probs.append(logits.softmax(-1))
    return TargetTable(row, torch.cat(probs), torch.cat(best), states.float())


@torch.no_grad()
def topk_table(
    topk_ids: Tensor, topk_probs: Tensor, loss_mask: Tensor, draft_index: Tensor
) -> TargetTable:
    """The table from a stored top-K target distribution instead of the target's ``lm_head``.

    topk_ids / topk_probs [B, W, K], loss_mask [B, W], draft_index [V] long (the draft id of
    each target id, -1 outside the draft vocabulary) -> the rows of positions j with
    loss_mask[j+1]: probabilities of the K tokens that lie in the draft vocabulary,
    renormalised; ``usable`` is False where none of them does.
    """
    need, row = read_rows(loss_mask)
    ids, probs = topk_ids[:, :-1][need].long(), topk_probs[:, :-1][need].float()  # [M, K]
    draft = draft_index[ids]
    kept = torch.where(draft >= 0, probs, torch.zeros_like(probs))
    dense = probs.new_zeros((ids.shape[0], int(draft_index.max()) + 1))
    dense.scatter_add_(1, draft.clamp(min=0), kept)
    mass = dense.sum(-1, keepdim=True)
    usable = need.clone()
    usable[need] = mass[:, 0] > 0
    return TargetTable(row, dense / mass.clamp(min=1e-30), ids[:, 0], None, usable)


def draft_index_of(head: DraftHead, vocab_size: int) -> Tensor:
    """[V] long: the draft id of each target id, -1 outside the draft vocabulary."""
    device = head.fc.weight.device
    ids = draft_ids(head)
    if ids is None:
        return torch.arange(vocab_size, device=device)
    index = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
    index[ids] = torch.arange(ids.shape[0], device=device)
    return index


def make_table(head: DraftHead, lm_head: nn.Module, batch: dict[str, Tensor]) -> TargetTable:
    """The target side of a batch: from its stored top-K distribution, else from ``lm_head``."""
    if "topk_ids" in batch:
        index = draft_index_of(head, head.config.vocab_size)
        return topk_table(batch["topk_ids"], batch["topk_probs"], batch["loss_mask"], index)
    return target_table(lm_head, batch["hidden"], batch["loss_mask"], draft_ids(head))


def chain_mask(n: int, step: int, device: torch.device) -> Tensor:
    """[1, n, (step+1) n] bool: causal over the real pairs, then the diagonal of each step."""
    real = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    own = torch.eye(n, dtype=torch.bool, device=device)
    return torch.cat([real] + [own] * step, dim=1)[None]


def unrolled_loss(
    head: DraftHead, lm_head: nn.Module, batch: dict[str, Tensor], features: Tensor, spec: LossSpec
) -> LossOutput:
    """The fast loss over a padded batch (see ``data.collate``).

    features [B, >=n, F]: the step-0 input (target features, noise already added), with
    n = longest sample - 1 pairs.
    """
    ids, loss_mask = batch["input_ids"], batch["loss_mask"]
    b, n = ids.shape[0], int(batch["lengths"].max()) - 1
    table = make_table(head, lm_head, batch)
    x = head.project_target_features(features[:, :n])
    positions = torch.arange(n, device=ids.device)[None].expand(b, -1)
    past: list[KV] | None = None
    means, sums = [], []
    for s in range(spec.steps):
        mask = chain_mask(n, s, ids.device)
        out, kv = head(x, ids[:, 1 + s : 1 + s + n], positions + s, past, mask)
        counted = loss_mask[:, 2 + s : 2 + s + n]
        if table.usable is not None:
            counted = counted & table.usable[:, 1 + s : 1 + s + n]
        rows = table.row[:, 1 + s : 1 + s + n][counted]
        mean, step_sums = step_terms(head, out[counted], table, rows, spec)
        means.append(mean)
        sums.append(step_sums)
        x, past = out, extend(past, kv)
    return _combine(means, sums, spec)


def step_terms(
    head: DraftHead, pred: Tensor, table: TargetTable, rows: Tensor, spec: LossSpec
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss of one step at its counted positions. pred [M, H], rows [M] -> (mean, sums)."""
    token, guess = SoftCrossEntropy.apply(head.logits(pred), table.probs[rows])
    correct = head.draft_to_target(guess) == table.best[rows]
    parts = {}
    if spec.variant == "eagle1":
        assert table.hidden is not None  # an EAGLE-1 table holds the target features
        feature = F.smooth_l1_loss(pred.float(), table.hidden[rows], reduction="none").mean(-1)
        parts = {"feature": feature.sum().detach(), "token": token.sum().detach()}
        per = spec.feature_weight * feature + spec.token_weight * token
    else:
        per = token
    count = rows.shape[0]
    sums = {
        "count": torch.tensor(float(count), device=pred.device),
        "correct": correct.sum().float(),
        "loss": per.sum().detach(),
        **parts,
    }
    return per.sum() / max(count, 1), sums


class SoftCrossEntropy(torch.autograd.Function):
    """Cross-entropy against a probability target, and the argmax, in one pass over the logits.

    logits [M, V] (any float dtype), target [M, V] probabilities summing to 1 -> (loss [M] fp32,
    argmax [M]). loss = ``logsumexp(z) - sum(p * z)``; its gradient ``softmax(z) - p`` is
    built in place in one fp32 buffer. The generic soft-label ``F.cross_entropy`` keeps several
    [M, V] temporaries, and these vocabulary-wide passes dominate an EAGLE-3 step on CPU.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        z = logits.float()
        lse = torch.logsumexp(z, dim=-1)
        loss = lse - torch.einsum("mv,mv->m", target, z)
        ctx.save_for_backward(logits, target, lse)
        best = z.argmax(-1)
        ctx.mark_non_differentiable(best)
        return loss, best

    @staticmethod
    def backward(ctx, grad: Tensor, _: Tensor | None) -> tuple[Tensor, None]:
        logits, target, lse = ctx.saved_tensors
        z = logits.float() if logits.dtype != torch.float32 else logits.clone()
        z.sub_(lse[:, None]).exp_().sub_(target).mul_(grad[:, None])
        return z.to(logits.dtype), None


def extend(past: list[KV] | None, new: list[KV]) -> list[KV]:
    """Append new per-layer keys/values [B, kvH, S, D] to the cached ones."""
    if past is None:
        return new
    return [
        (torch.cat((pk, k), 2), torch.cat((pv, v), 2))
        for (pk, pv), (k, v) in zip(past, new, strict=True)
    ]


def _combine(means: list[Tensor], sums: list[dict[str, Tensor]], spec: LossSpec) -> LossOutput:
    loss = means[0]  # step 0's weight is step_weight**0 = 1
    for s, mean in enumerate(means[1:], start=1):
        loss = loss + spec.step_weight**s * mean
    stacked = {name: torch.stack([s[name] for s in sums]) for name in spec.metrics}
    return LossOutput(loss, stacked)


# -- slow reference -----------------------------------------------------------------------------


def reference_loss(
    head: DraftHead, lm_head: nn.Module, batch: dict[str, Tensor], features: Tensor, spec: LossSpec
) -> LossOutput:
    """The same loss, one sample, position and step at a time, chains run like the drafter."""
    vocab_ids = draft_ids(head)
    per_step: list[list[tuple[Tensor, dict[str, Tensor]]]] = [[] for _ in range(spec.steps)]
    for b, length in enumerate(batch["lengths"].tolist()):
        ids, loss_mask = batch["input_ids"][b], batch["loss_mask"][b]
        for t in range(length - 1):
            for s, pred in enumerate(
                _reference_chain(head, features[b], ids, t, length, spec.steps)
            ):
                if not (t + 2 + s < length and loss_mask[t + 2 + s]):
                    continue
                if "topk_ids" in batch:
                    j = t + 1 + s
                    topk = (batch["topk_ids"][b, j], batch["topk_probs"][b, j])
                    terms = _reference_topk_terms(head, pred, topk, vocab_ids)
                    if terms is None:
                        continue
                else:
                    hidden = batch["hidden"][b, t + 1 + s]
                    terms = _reference_terms(head, lm_head, pred, hidden, vocab_ids, spec)
                per_step[s].append(terms)
    means, sums = [], []
    for entries in per_step:
        losses = [loss for loss, _ in entries]
        total = torch.stack(losses).sum() if losses else features.new_zeros(()).float()
        means.append(total / max(len(entries), 1))
        zero = total.new_zeros(()).detach()
        step_sums = {"count": zero + len(entries), "loss": total.detach()}
        for name in set(spec.metrics) - set(step_sums):
            step_sums[name] = sum((e[name] for _, e in entries), zero)
        sums.append(step_sums)
    return _combine(means, sums, spec)


def _reference_chain(
    head: DraftHead, features: Tensor, ids: Tensor, t: int, length: int, steps: int
) -> list[Tensor]:
    """Outputs [H] of steps 0.. of the chain that starts at pair t (as many as the data allows)."""
    device = ids.device
    x = head.project_target_features(features[None, : t + 1])
    causal = torch.ones(t + 1, t + 1, dtype=torch.bool, device=device).tril()[None]
    positions = torch.arange(t + 1, device=device)[None]
    out, past = head(x, ids[None, 1 : t + 2], positions, None, causal)
    h, outputs = out[:, -1:], [out[0, -1]]
    for s in range(1, steps):
        if t + 1 + s >= length:
            break
        visible = torch.ones(1, 1, past[0][0].shape[2] + 1, dtype=torch.bool, device=device)
        token, position = ids[None, t + 1 + s : t + 2 + s], torch.full((1, 1), t + s, device=device)
        h, new = head(h, token, position, past, visible)
        past = extend(past, new)
        outputs.append(h[0, 0])
    return outputs


def _reference_topk_terms(
    head: DraftHead, pred: Tensor, topk: tuple[Tensor, Tensor], vocab_ids: Tensor | None
) -> tuple[Tensor, dict[str, Tensor]] | None:
    """EAGLE-3 loss of pred [H] against a stored top-K distribution (ids [K], probs [K]),
    token by token; None when no top-K token is in the draft vocabulary."""
    logits = head.logits(pred[None])[0].float()
    ids, probs = topk
    p = torch.zeros_like(logits)
    for token, prob in zip(ids.tolist(), probs.float().tolist(), strict=True):
        if vocab_ids is None:
            p[token] += prob
        elif (vocab_ids == token).any():
            p[int((vocab_ids == token).nonzero()[0, 0])] += prob
    if float(p.sum()) == 0.0:
        return None
    p = p / p.sum()
    token_loss = -(p * logits.log_softmax(-1)).sum()
    hit = head.draft_to_target(logits.argmax()[None])[0] == ids[0]
    return token_loss, {"correct": hit.float()}


def _reference_terms(
    head: DraftHead,
    lm_head: nn.Module,
    pred: Tensor,
    target_hidden: Tensor,
    vocab_ids: Tensor | None,
    spec: LossSpec,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss and counters of one prediction pred [H] against the target feature [H]."""
    logits = head.logits(pred[None])[0].float()
    with torch.no_grad():
        target_logits = lm_head(target_hidden[None])[0].float()
    best = target_logits.argmax()
    if vocab_ids is not None:
        target_logits = target_logits[vocab_ids]
    p = target_logits.softmax(-1)
    token = -(p * logits.log_softmax(-1)).sum()
    hit = head.draft_to_target(logits.argmax()[None])[0] == best
    terms = {"correct": hit.float()}
    if spec.variant != "eagle1":
        return token, terms
    d = (pred.float() - target_hidden.float()).abs()
    feature = torch.where(d < 1, 0.5 * d * d, d - 0.5).mean()  # SmoothL1 with beta 1
    terms.update(feature=feature.detach(), token=token.detach())
    return spec.feature_weight * feature + spec.token_weight * token, terms


# -- the wrapped module -------------------------------------------------------------------------


class HeadObjective(nn.Module):
    """The head and its loss as one module, the unit that accelerate / DeepSpeed wrap.

    ``forward(batch)`` -> (loss, per-step sums). The target's ``lm_head`` is borrowed (kept in a
    tuple so it is neither a submodule nor a parameter: not trained, not saved, not cast).
    Uniform noise in [-noise, noise] is added to the step-0 input features in training mode.
    """

    def __init__(self, head: DraftHead, lm_head: nn.Module, spec: LossSpec, noise: float) -> None:
        super().__init__()
        self.head = head
        self.spec = spec
        self.noise = noise
        self._borrowed = (lm_head,)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        source = batch["aux"] if self.spec.variant == "eagle3" else batch["hidden"]
        features = source.to(self.head.fc.weight.dtype)
        if self.training and self.noise > 0:
            features = features + (torch.rand_like(features) * 2 - 1) * self.noise
        out = unrolled_loss(self.head, self._borrowed[0], batch, features, self.spec)
        return out.loss, out.sums
