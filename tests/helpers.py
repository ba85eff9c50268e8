"""Tiny random targets and heads for CPU tests, and a short head fit that makes drafts agree."""

from __future__ import annotations

import copy

import torch
import transformers
from transformers import AutoModelForCausalLM

from eagle.model.draft_head import DraftHead, HeadConfig, TargetParts, build_head
from eagle.model.target import TargetModel

VOCAB = 96
HIDDEN = 32

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)

ARCHITECTURES = {
    "llama": lambda: transformers.LlamaConfig(**_COMMON),
    "qwen2": lambda: transformers.Qwen2Config(**_COMMON),
    "qwen3": lambda: transformers.Qwen3Config(**_COMMON, head_dim=8),
    "mixtral": lambda: transformers.MixtralConfig(
        **_COMMON, num_local_experts=4, num_experts_per_tok=2, sliding_window=None
    ),
    "mistral": lambda: transformers.MistralConfig(**_COMMON, sliding_window=None),
}


def make_model(arch: str, seed: int = 0, attn: str = "sdpa", dtype=torch.float32):
    torch.manual_seed(seed)
    config = copy.deepcopy(ARCHITECTURES[arch]())
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    return model.to(dtype).eval()


def make_target(arch: str = "llama", seed: int = 0, attn: str = "sdpa") -> TargetModel:
    return TargetModel(make_model(arch, seed, attn))


def head_config(variant: str, draft_vocab: int | None = None, **overrides) -> HeadConfig:
    fields = dict(
        variant=variant,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        draft_vocab_size=draft_vocab if variant == "eagle3" else None,
    )
    fields.update(overrides)
    return HeadConfig(**fields)


def random_head(
    target: TargetModel, variant: str, seed: int = 1, draft_vocab: int | None = None
) -> DraftHead:
    """A randomly initialised head; with a reduced EAGLE-3 vocabulary, d2t maps every other id."""
    torch.manual_seed(seed)
    config = head_config(variant, draft_vocab)
    head = build_head(config, TargetParts(target.embed_tokens, target.lm_head), False)
    if variant == "eagle3" and draft_vocab and draft_vocab < VOCAB:
        kept = torch.randperm(VOCAB)[:draft_vocab].sort().values
        head.d2t.copy_(kept - torch.arange(draft_vocab))
        head.t2d.zero_()
        head.t2d[kept] = True
    return head.to(target.dtype).eval()


def greedy_sequences(target: TargetModel, prompts: torch.Tensor, length: int) -> torch.Tensor:
    """Greedy continuations of each prompt row [B, P] -> [B, P + length]."""
    model = target.model
    mask = torch.ones_like(prompts)
    with torch.no_grad():
        return model.generate(
            prompts, attention_mask=mask, max_new_tokens=length, do_sample=False,
            eos_token_id=None, pad_token_id=VOCAB - 1,
        )  # fmt: skip


def fit_head(
    head: DraftHead,
    target: TargetModel,
    prompts: torch.Tensor,
    length: int,
    steps: int = 200,
    unroll: int = 3,
) -> DraftHead:
    """Teach the head the target's greedy continuations of ``prompts`` [B, P] (seconds on CPU).

    The head then drafts those continuations mostly right, which is what the acceptance and
    cache-compaction tests need; the target's output is unaffected by the head either way.
    """
    sequences = greedy_sequences(target, prompts, length)
    with torch.no_grad():
        out = target.model(sequences, output_hidden_states=True)
    layers = head.config.default_feature_layers(target.num_layers)
    features = torch.cat([out.hidden_states[i] for i in layers], dim=-1)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=3e-3)
    head.train()
    for _ in range(steps):
        loss = _unrolled_loss(head, features, sequences, unroll)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


def _unrolled_loss(
    head: DraftHead, features: torch.Tensor, sequences: torch.Tensor, unroll: int
) -> torch.Tensor:
    """Cross-entropy of ``unroll`` chained draft steps, each attending as a tree node would.

    Pair t reads (feature_t, token_{t+1}) and predicts token_{t+2}; step s > 0 feeds the head's
    own output of step s - 1 with token_{t+1+s}, seeing the real pairs <= t and its own chain.
    """
    b, length = sequences.shape
    n = length - 1 - unroll
    real = torch.ones(n, n, dtype=torch.bool).tril()
    eye = torch.eye(n, dtype=torch.bool)
    hidden = head.project_target_features(features[:, :n])
    past: list | None = None
    total = torch.zeros(())
    for s in range(unroll):
        tokens = sequences[:, 1 + s : 1 + s + n]
        labels = sequences[:, 2 + s : 2 + s + n]
        positions = (torch.arange(n) + s)[None].expand(b, -1)
        mask = torch.cat([real] + [eye] * s, dim=1)[None]
        hidden, kv = head(hidden, tokens, positions, past, mask)
        logits = head.logits(hidden).flatten(0, 1)
        total = total + 0.8**s * torch.nn.functional.cross_entropy(
            logits, _draft_labels(head, labels)
        )
        past = kv if past is None else [
            (torch.cat((pk, k), 2), torch.cat((pv, v), 2))
            for (pk, pv), (k, v) in zip(past, kv, strict=True)
        ]  # fmt: skip
    return total


def _draft_labels(head: DraftHead, labels: torch.Tensor) -> torch.Tensor:
    if head.variant == "eagle3" and head.reduced_vocab:
        lookup = torch.cumsum(head.t2d.long(), 0) - 1
        return lookup[labels].flatten()
    return labels.flatten()
