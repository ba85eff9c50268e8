"""On-policy samples in one pass: the target answers a batch of prompts greedily and the
features of every token are kept as it goes, so no second forward captures them.

Why: on this project's CPUs a regenerated answer costs a batched decode (small matrix products,
a few times less efficient per token than a long forward) and then a capture forward over the
whole conversation. The decode already computes every hidden state and every next-token
distribution that the capture would store, so keeping them removes the capture pass.

What a sample holds (the same as ``eagle.ge_data.capture`` stores for a rendered conversation
whose last turn is the target's answer): the prompt ids followed by the answer ids (up to and
including the first end-of-sequence id, or cut at the token budget), a loss mask over the answer
ids, the requested hidden-state layers at every position and the target's top-K next-token
distribution at every position. The answer ids are the ones the target produced, not a
re-tokenisation of their text.

How a batch is decoded:
- Prompts are left-padded to a common width P; pad slots are never visible to a real token
  (a pad query sees only itself). Row b's positions count its real tokens only, so every row is
  computed as if it were alone (equal up to float rounding).
- Each step feeds one token per live row at cache slot P + step; a row is finished once the
  token it fed was an end-of-sequence id or its budget (``max_new_tokens``, and ``max_len``
  for the whole sample) is used. Finished rows leave the batch and the cache, so long answers
  do not keep paying for short ones.
- The top-K distribution of prompt positions comes from the post-norm last state through the
  target's ``lm_head`` (as the capture does); at answer positions from the step's own logits.

The slow reference is ``reference_samples``: each prompt decoded alone by full recomputation,
then captured by ``eagle.ge_data.capture.capture_batch``; a test checks that both agree.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eagle.ge_data.batching import pad_rows
from eagle.ge_data.capture import HIDDEN_LAYER, CaptureSettings, target_topk
from eagle.ge_data.feature_format import StoredSample, TopK, stored_ids
from eagle.ge_data.regenerate import RegenSettings, read_regenerated, to_record
from eagle.ge_data.sharegpt import ASSISTANT, Conversation


def _limits(settings: RegenSettings) -> tuple[int, int | None]:
    """(most answer tokens, most tokens per sample or None) of greedy ``settings``.

    The one pass stores a sample as it is decoded, so ``max_prompt_len`` (the capture's
    ``max_len``) bounds the whole sample, prompt and answer: a longer one would be cut there by
    the capture anyway."""
    if settings.generation.sampling.temperature > 0.0:
        raise ValueError(
            "answers are decoded greedily in one pass: settings.generation.sampling.temperature "
            f"must be 0, got {settings.generation.sampling.temperature}"
        )
    return settings.generation.max_new_tokens, settings.max_prompt_len


@dataclass(frozen=True)
class AnsweredSample:
    """One prompt with the target's answer and the features of every position."""

    input_ids: Tensor  # [L] long: prompt then answer
    prompt_len: int
    features: Tensor  # [L, F]: the capture layers concatenated (HIDDEN_LAYER first)
    topk: TopK | None  # [L, K] next-token distribution, or None without top-K
    ended: bool  # the answer ends with an end-of-sequence id (False: cut by the budget)

    @property
    def answer_ids(self) -> Tensor:
        return self.input_ids[self.prompt_len :]

    @property
    def loss_mask(self) -> Tensor:
        mask = torch.zeros(self.input_ids.numel(), dtype=torch.uint8)
        mask[self.prompt_len :] = 1
        return mask


def _topk_of_logits(logits: Tensor, k: int) -> TopK:
    """logits [N, V] -> TopK ([N, k] int32, [N, k] fp16) of the full-vocabulary softmax."""
    top = logits.float().softmax(-1).topk(k, dim=-1)
    return TopK(top.indices.to(torch.int32).cpu(), top.values.to(torch.float16).cpu())


def _prefill_visibility(real: Tensor) -> Tensor:
    """real [B, P] bool -> visible [B, P, P]: causal over real slots; a pad query sees itself."""
    width = real.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=real.device).tril()
    visible = causal[None] & real[:, None, :]
    return visible | torch.eye(width, dtype=torch.bool, device=real.device)[None]


@torch.inference_mode()
def answer_batch(
    target,
    prompts: Sequence[Sequence[int]],
    eos_ids: set[int] | frozenset[int],
    pad_id: int,
    capture: CaptureSettings,
    settings: RegenSettings,
    feature_dtype: torch.dtype | None = None,
) -> list[AnsweredSample]:
    """Answer every prompt greedily in one batch and keep the features of every position.

    ``target`` is an ``eagle.model.target.TargetModel``; ``capture`` says which layers and how
    many top-K probabilities to keep; features are returned in ``feature_dtype`` (default:
    ``capture.feature_dtype``); ``settings`` bounds the answers (`_limits`: greedy, its
    ``max_new_tokens``, and ``max_prompt_len`` over prompt and answer); every prompt must be
    shorter than ``settings.max_prompt_len``.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("answer_batch needs at least one prompt and no empty prompt")
    dtype = feature_dtype or capture.feature_dtype
    device, width = target.device, target.hidden_size
    layers = capture.layers
    k = capture.target_topk
    lengths = torch.tensor([len(p) for p in prompts])
    max_new_tokens, max_len = _limits(settings)
    budget = torch.full_like(lengths, max_new_tokens)
    if max_len is not None:
        if int(lengths.max()) >= max_len:
            raise ValueError(
                f"a prompt has {int(lengths.max())} tokens, max_prompt_len is {max_len}"
            )
        budget = budget.clamp(max=max_len - lengths)
    rows, span = len(prompts), int(lengths.max())
    prompt_rows = [torch.tensor(list(prompt), dtype=torch.long) for prompt in prompts]
    ids = pad_rows(prompt_rows, value=pad_id, left=True)  # [B, span]
    real = pad_rows([torch.ones_like(row, dtype=torch.bool) for row in prompt_rows], left=True)
    positions = (real.long().cumsum(1) - 1).clamp(min=0)

    cache = target.new_cache()
    _, feats = target.forward_rows(
        ids.to(device),
        positions.to(device),
        _prefill_visibility(real.to(device)),
        cache,
        layers,
        logits=False,
    )
    prompt_feats = [feats[b, span - len(p) :].to(dtype).cpu() for b, p in enumerate(prompts)]
    prompt_topk: list[TopK | None] = [None] * rows
    first = torch.empty(rows, dtype=torch.long)
    for b, p in enumerate(prompts):
        last = feats[b, span - len(p) :, :width]
        top = target_topk(target.lm_head, last, max(k, 1))
        first[b] = top.ids[-1, 0]
        prompt_topk[b] = TopK(top.ids, top.probs) if k else None
    del feats

    answers: list[list[int]] = [[] for _ in range(rows)]
    answer_feats: list[list[Tensor]] = [[] for _ in range(rows)]
    answer_topk: list[list[TopK]] = [[] for _ in range(rows)]
    ended = [False] * rows
    live = torch.arange(rows)  # original row of each batch row still decoding
    slot_real = real.clone()  # [live, slots]: which cache slots a live row may see
    current = first
    step = 0
    while live.numel():
        slot_real = torch.cat([slot_real, torch.ones(live.numel(), 1, dtype=torch.bool)], dim=1)
        logits, feats = target.forward_rows(
            current[:, None].to(device),
            (lengths[live] + step)[:, None].to(device),
            slot_real[:, None, :].to(device),
            cache,
            layers,
            logits=True,
        )
        top = _topk_of_logits(logits[:, -1], max(k, 1))
        nxt = top.ids[:, 0].long()
        step_feats = feats[:, -1].to(dtype).cpu()  # one copy to the host per step
        keep = []
        for i, (b, token) in enumerate(zip(live.tolist(), current.tolist(), strict=True)):
            answers[b].append(token)
            answer_feats[b].append(step_feats[i])
            if k:
                answer_topk[b].append(TopK(top.ids[i : i + 1], top.probs[i : i + 1]))
            if token in eos_ids:
                ended[b] = True
            elif len(answers[b]) < int(budget[b]):
                keep.append(i)
        step += 1
        if len(keep) < live.numel():
            kept = torch.tensor(keep, dtype=torch.long)
            target.keep_batch_rows(cache, kept.to(device))
            live, slot_real, nxt = live[kept], slot_real[kept], nxt[kept]
        current = nxt

    out = []
    for b, prompt in enumerate(prompts):
        tokens = torch.tensor(list(prompt) + answers[b], dtype=torch.long)
        features = torch.cat([prompt_feats[b], torch.stack(answer_feats[b])])
        topk = None
        prompt_top = prompt_topk[b]
        if prompt_top is not None:  # k > 0
            parts = [prompt_top, *answer_topk[b]]
            topk = TopK(torch.cat([t.ids for t in parts]), torch.cat([t.probs for t in parts]))
        out.append(AnsweredSample(tokens, len(prompt), features, topk, ended[b]))
    return out


def split_features(sample: AnsweredSample, capture: CaptureSettings, width: int):
    """(hidden [L, H] or None, aux [L, 3H] or None) of a sample, as the capture stores them."""
    hidden = sample.features[:, :width] if capture.store_hidden else None
    aux = sample.features[:, width:] if capture.aux_layers else None
    return hidden, aux


@torch.inference_mode()
def reference_samples(
    target,
    prompts: Sequence[Sequence[int]],
    eos_ids: set[int] | frozenset[int],
    capture: CaptureSettings,
    settings: RegenSettings,
) -> list[AnsweredSample]:
    """The slow reference of `answer_batch`: each prompt decoded alone by recomputing the whole
    sequence every step, then captured by ``capture_batch`` (fp32 features)."""
    from eagle.ge_data.capture import capture_batch
    from eagle.ge_data.render import RenderedExample

    width = target.hidden_size
    max_new_tokens, max_len = _limits(settings)
    out = []
    for prompt in prompts:
        tokens = list(prompt)
        budget = max_new_tokens
        if max_len is not None:
            budget = min(budget, max_len - len(prompt))
        ended = False
        while len(tokens) - len(prompt) < budget:
            ids = torch.tensor([tokens], device=target.device)
            last = target.capture(ids, torch.ones_like(ids), (HIDDEN_LAYER,))[0, -1:]
            token = int(target.lm_head(last).argmax(-1))
            tokens.append(token)
            if token in eos_ids:
                ended = True
                break
        ids = torch.tensor(tokens, dtype=torch.long)
        mask = torch.zeros(len(tokens), dtype=torch.uint8)
        mask[len(prompt) :] = 1
        fp32 = CaptureSettings(
            capture.aux_layers, torch.float32, target_topk=capture.target_topk, store_hidden=True
        )
        hidden, aux, topk = capture_batch(
            target, [RenderedExample("ref", ids, mask, truncated=False)], fp32
        )[0]
        assert hidden is not None  # store_hidden=True
        features = hidden if aux is None else torch.cat([hidden, aux], dim=-1)
        assert features.shape[-1] >= width
        out.append(AnsweredSample(ids, len(prompt), features, topk, ended))
    return out


@dataclass
class OnPolicyStats:
    samples: int = 0  # stored by this run
    already_stored: int = 0
    new_tokens: int = 0  # answer tokens decoded by this run
    tokens: int = 0  # prompt + answer tokens stored by this run
    seconds: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        rate = self.new_tokens / self.seconds if self.seconds > 0 else 0.0
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"answered and captured {self.samples} conversations in one pass "
            f"({self.already_stored} already stored), {self.new_tokens} new tokens, "
            f"{self.tokens} tokens stored in {self.seconds:.1f} s ({rate:.1f} new tok/s); "
            f"skipped: {skipped}"
        )


def answer_conversations(
    chat,
    conversations: Sequence[Conversation],
    writer,
    capture: CaptureSettings,
    settings: RegenSettings,
    output: str | Path,
    progress: Any | None = None,
    turn: int = 1,
) -> OnPolicyStats:
    """User turn ``turn`` answered by the target and stored through ``writer`` in one pass.

    The conversation's earlier turns are kept as given (turn 1: the first user turn alone), so
    the loss covers the target's answer alone; a conversation with fewer user turns is skipped
    ("fewer_turns").

    ``chat`` is an ``eagle.ge_data.regenerate.ChatTarget``; ``writer`` a
    ``eagle.ge_data.capture.ShardWriter`` (resuming skips the ids it has stored). The answers
    are also appended to the JSON-lines file ``output`` (the regenerated conversations, as
    ``eagle.ge_data.regenerate`` writes them). Conversations are answered in batches of
    similar prompt length, so samples are stored in that order.
    """
    _, max_len = _limits(settings)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stored = set(stored_ids(writer.manifest))
    written, _ = read_regenerated(output)
    stats = OnPolicyStats(already_stored=sum(c.id in stored for c in conversations))
    todo = []
    for conversation in conversations:
        if conversation.id in stored:
            continue
        first = conversation.first_turns(turn)
        if len(first.turns) < 2 * turn:
            stats.skipped["fewer_turns"] += 1
            if progress is not None:
                progress.update(1)
            continue
        messages = first.messages()[:-1]  # up to user turn ``turn``
        prompt = chat.encode_prompt(messages)
        if max_len is not None and len(prompt) >= max_len:
            stats.skipped["prompt_reached_max_len"] += 1
            if progress is not None:
                progress.update(1)
            continue
        todo.append((first, prompt))
    todo.sort(key=lambda item: len(item[1]))
    width = chat.target.hidden_size
    start = time.perf_counter()
    for at in range(0, len(todo), settings.batch_size):
        batch = todo[at : at + settings.batch_size]
        answered = answer_batch(
            chat.target, [p for _, p in batch], chat.eos_ids, chat.pad_id, capture, settings
        )
        records = []
        for (conversation, _), sample in zip(batch, answered, strict=True):
            stats.new_tokens += sample.answer_ids.numel()
            answer = sample.answer_ids.tolist()
            if sample.ended:
                answer = answer[:-1]
            text = chat.tokenizer.decode(answer, skip_special_tokens=True).strip()
            if not text:
                stats.skipped["empty_answer"] += 1
                continue
            hidden, aux = split_features(sample, capture, width)
            writer.add(
                StoredSample(
                    conversation.id,
                    sample.input_ids.to(torch.int32),
                    sample.loss_mask,
                    hidden,
                    aux,
                    sample.topk,
                )
            )
            stats.samples += 1
            stats.tokens += sample.input_ids.numel()
            if conversation.id not in written:
                turns = (*conversation.turns[:-1], (ASSISTANT, text))
                records.append(to_record(replace(conversation, turns=turns)))
        with open(output, "a", encoding="utf-8") as stream:
            stream.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        stats.seconds = time.perf_counter() - start
        if progress is not None:
            progress.update(len(batch))
            rate = stats.new_tokens / max(stats.seconds, 1e-9)
            progress.set_postfix(new_tok_s=f"{rate:.1f}", refresh=False)
    writer.flush()
    stats.seconds = time.perf_counter() - start
    return stats
