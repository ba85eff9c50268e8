"""Assembling what training needs: the target's frozen parts, the head, the optimizer.

Owns: ``load_target`` (the target's embedding and ``lm_head`` through
``eagle.model.target.TargetModel``, plus its fingerprint; the rest is dropped), ``CastInput``,
``make_head`` (a fresh head whose architecture comes from the config, the target and the data,
with the data's draft vocabulary maps installed), ``init_from_head`` (start from a trained head's
weights instead) and ``make_optimizer`` / ``make_scheduler``.

Design choices:
- The target parts stay outside the trained module and are never cast by a mixed-precision
  backend; ``CastInput`` runs the frozen ``lm_head`` on inputs cast to its own dtype, so a head
  kept in bf16 by DeepSpeed and a target kept in fp32 work together.
- The scheduler is a plain ``LambdaLR`` over optimizer steps, stepped by the training loop only
  when gradients were synchronised, so its length does not depend on the process count.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eagle.ge_data.feature_format import Manifest, Vocabulary, target_fingerprint
from eagle.model.draft_head import DraftHead, Eagle3Head, TargetParts, build_head, weight_of
from eagle.train.config import TrainConfig, build_head_config
from eagle.train.data import draft_vocab


class CastInput(nn.Module):
    """A frozen module applied to inputs cast to its parameters' dtype (the target's lm_head)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.requires_grad_(False)

    @property
    def weight(self) -> Tensor:
        return weight_of(self.module)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(self.weight.dtype))


@dataclass(frozen=True)
class FrozenTarget:
    """What training keeps of the target: its borrowed parts and its identity."""

    parts: TargetParts  # embedding and (input-casting) lm_head
    config: Any  # the transformers config
    num_layers: int
    fingerprint: str  # eagle.ge_data.feature_format.target_fingerprint, compared with the data's


def load_target(path: str, dtype: torch.dtype | None) -> FrozenTarget:
    """Load the target (hub id, folder or registered name) and keep its embedding and lm_head."""
    from eagle.model.defaults import resolve_model_path
    from eagle.model.target import TargetModel

    kwargs = {"dtype": dtype} if dtype is not None else {}
    target = TargetModel.from_pretrained(resolve_model_path(path), **kwargs)
    fingerprint = target_fingerprint(target.config.to_json_string(), weight_of(target.embed_tokens))
    parts = target_parts(target.embed_tokens, target.lm_head)
    return FrozenTarget(parts, target.config, target.num_layers, fingerprint)


def target_parts(embed_tokens: nn.Module, lm_head: nn.Module) -> TargetParts:
    return TargetParts(embed_tokens.requires_grad_(False), CastInput(lm_head))


def make_head(
    config: TrainConfig,
    target_config: Any,
    parts: TargetParts,
    manifest: Manifest,
    vocab: Vocabulary | None,
) -> DraftHead:
    """A freshly initialised head (seeded by the caller) for this target and data."""
    vocab_size, _ = weight_of(parts.embed_tokens).shape
    stored = None if vocab is None else int(vocab.d2t.shape[0])
    layers = manifest.aux_layers if config.variant == "eagle3" else None
    head_config = build_head_config(config, target_config, vocab_size, stored, layers)
    own = config.head.save_embedding
    head = build_head(head_config, parts, own_embedding=own)
    if head.embed_tokens is not None:  # the head owns its embedding
        head.embed_tokens.weight.data.copy_(weight_of(parts.embed_tokens).data)
    if isinstance(head, Eagle3Head) and head.reduced_vocab:
        d2t, t2d = draft_vocab(vocab, head_config.draft_vocab, vocab_size)
        head.d2t.copy_(d2t)
        head.t2d.copy_(t2d)
    if isinstance(head, Eagle3Head) and config.head.lm_head_init == "target":
        rows = torch.arange(head.d2t.shape[0]) + head.d2t if head.reduced_vocab else slice(None)
        head.lm_head.weight.data.copy_(weight_of(parts.lm_head).data[rows])
    return head


def init_from_head(head: DraftHead, path: str, parts: TargetParts) -> list[str]:
    """Copy a trained head's weights (published format, strict) into ``head``, in place.

    The trained head must have the same computation (``HeadConfig`` equal apart from
    ``extra``); its draft vocabulary maps (EAGLE-3 ``d2t``/``t2d``) replace the data's, because
    its ``lm_head`` rows are tied to them. Returns notes for the log (e.g. vocabulary differs).
    """
    from eagle.model.checkpoint import load_head

    trained = load_head(path, parts, use_eagle3=head.variant == "eagle3", dtype=torch.float32)
    ours = dataclasses.replace(head.config, extra={})
    theirs = dataclasses.replace(trained.config, extra={})
    if ours != theirs:
        a, b = dataclasses.asdict(ours), dataclasses.asdict(theirs)
        diff = ", ".join(f"{k}: config {a[k]!r} vs head {b[k]!r}" for k in a if a[k] != b[k])
        raise ValueError(f"--init-head {path} does not match the training config: {diff}")
    notes = []
    if (
        isinstance(head, Eagle3Head)
        and isinstance(trained, Eagle3Head)
        and head.reduced_vocab
        and not torch.equal(head.d2t, trained.d2t)
    ):
        notes.append(
            f"--init-head {path} keeps its own draft vocabulary, which differs from the data's"
        )
    state = {k: v for k, v in trained.state_dict().items() if k != "embed_tokens.weight"}
    missing, unexpected = head.load_state_dict(state, strict=False)
    left = [k for k in missing if k != "embed_tokens.weight"]
    if left or unexpected:
        raise ValueError(f"--init-head {path}: missing {left}, unexpected {unexpected}")
    return notes


def make_optimizer(head: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    t = config.train
    trainable = [p for p in head.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then constant, linear or cosine decay to 0."""
    warmup, kind = config.train.warmup_steps, config.train.schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
