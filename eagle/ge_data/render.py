"""Rendering a conversation to training tokens: `input_ids` and the assistant `loss_mask`.

Owns: `render_example` (one conversation -> `RenderedExample` or None), `render_conversations`
(many, with `RenderStats`), `assistant_spans` (where each reply lies in the rendered text), and
the length policies.

How the mask is found, from the template alone (no per-format offsets):
1. Render the whole chat. For the i-th message, if it is an assistant reply, also render
   `messages[:i]` with the generation prompt (the "head") and `messages[:i+1]` (the "upto").
   The reply's characters are `full[len(head):len(upto)]`.
2. Each head must be a prefix of its upto, each upto a prefix of the full text, and the spans
   must not overlap; otherwise the template is not prefix-stable (e.g. it rewrites earlier turns
   depending on what follows) and `TemplateNotPrefixStableError` is raised.
3. The span is stripped of surrounding whitespace, then the full text is tokenized once with
   offsets (`return_offsets_mapping=True`, so a fast tokenizer is required) and every token whose
   characters overlap a span gets mask 1.

What is masked (loss_mask = 1): the reply's tokens and the end-of-turn token the template writes
right after it (`<|im_end|>` for ChatML, `<|eot_id|>` for Llama-3, `</s>` for Vicuna), since the
draft must learn to end turns. Not masked: system and user text, the generation-prompt header
(`<|im_start|>assistant\\n`, `ASSISTANT:`), whitespace after the end-of-turn token, and any
further special tokens after the first one (e.g. the `<s>` that FastChat's Llama-2 template puts
right after `</s>`, which opens the next turn). A token that straddles the header and the reply
counts as reply.

Lengths: `max_len` counts tokens. Policy "truncate" keeps the first `max_len` tokens; "drop"
skips longer examples. An example left with no masked token is skipped either way (no signal).
Special-token strings inside message text are tokenized as special tokens, as the template's own
tokenization would do.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from eagle.chat.templates import ChatTemplate, resolve_template
from eagle.ge_data.sharegpt import ASSISTANT, Conversation

POLICIES = ("truncate", "drop")


class TemplateNotPrefixStableError(ValueError):
    """The template renders a chat's prefix differently from the start of the whole chat, so
    assistant tokens cannot be located from renderings."""


@dataclass(frozen=True)
class RenderedExample:
    """One training example."""

    id: str
    input_ids: torch.Tensor  # [L] int64 token ids
    loss_mask: torch.Tensor  # [L] int64, 1 on assistant-reply tokens, 0 elsewhere
    truncated: bool  # True when cut to max_len

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())


@dataclass
class RenderStats:
    """Counts over `render_conversations`: kept examples, tokens, and skips by reason."""

    kept: int = 0
    truncated: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, example: RenderedExample) -> None:
        self.kept += 1
        self.truncated += int(example.truncated)
        self.tokens += int(example.input_ids.numel())
        self.loss_tokens += example.num_loss_tokens


def _require_prefix(prefix: str, text: str, what: str, template: ChatTemplate) -> None:
    if not text.startswith(prefix):
        raise TemplateNotPrefixStableError(
            f"chat template {template.name!r} is not prefix-stable: {what}; the loss mask "
            "cannot be derived from it (try another --template)"
        )


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def assistant_spans(
    template: ChatTemplate, messages: Sequence[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages` and find each assistant reply in the text.

    Returns:
        (full text, [(start, end) character span of each assistant reply, whitespace-stripped]).
    Raises:
        TemplateNotPrefixStableError: see the module docstring, step 2.
    """
    full = template.render(messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    previous_end = 0
    for i, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        head = template.render(messages[:i], add_generation_prompt=True)
        upto = template.render(messages[: i + 1], add_generation_prompt=False)
        _require_prefix(head, upto, f"the generation prompt before reply {i} changes", template)
        _require_prefix(upto, full, f"the chat up to reply {i} renders differently", template)
        if len(head) < previous_end:
            raise TemplateNotPrefixStableError(
                f"chat template {template.name!r} is not prefix-stable: reply {i} starts inside "
                "the previous reply"
            )
        spans.append(_strip_span(full, len(head), len(upto)))
        previous_end = len(upto)
    return full, spans


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (declared ones and added tokens marked special)."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return set(tokenizer.all_special_ids) | {i for i, tok in added.items() if tok.special}


def _span_tokens(offsets: list[tuple[int, int]], ends: list[int], span: tuple[int, int]) -> range:
    """Indices of the tokens whose characters overlap `span` (offsets are sorted)."""
    start, end = span
    first = bisect.bisect_right(ends, start)
    last = first
    while last < len(offsets) and offsets[last][0] < end:
        last += 1
    return range(first, last)


def _keep_first_trailing_special(tokens: range, ids: list[int], special: set[int]) -> range:
    """Cut a run of trailing special tokens down to its first token (the end-of-turn token)."""
    stop = tokens.stop
    while stop > tokens.start and ids[stop - 1] in special:
        stop -= 1
    return range(tokens.start, min(stop + 1, tokens.stop))


def tokenize_with_mask(
    tokenizer: Any,
    template: ChatTemplate,
    messages: Sequence[dict[str, str]],
    last_reply_only: bool = False,
) -> tuple[list[int], list[int]]:
    """Token ids of the rendered chat and the loss mask (same length), before any truncation.

    ``last_reply_only`` masks the last assistant reply alone (earlier replies are context)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            "tokenizer must be a fast (Rust) tokenizer: the loss mask needs "
            f"return_offsets_mapping=True, which {type(tokenizer).__name__} does not support"
        )
    text, spans = assistant_spans(template, messages)
    encoding = tokenizer(
        text,
        add_special_tokens=template.add_special_tokens,
        return_offsets_mapping=True,
        verbose=False,
    )
    ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
    ends = [end if end > start else -1 for start, end in offsets]  # empty tokens match no span
    ends = list(_running_max(ends))
    special = special_token_ids(tokenizer)
    mask = [0] * len(ids)
    for span in spans[-1:] if last_reply_only else spans:
        for k in _keep_first_trailing_special(_span_tokens(offsets, ends, span), ids, special):
            mask[k] = int(offsets[k][1] > offsets[k][0])
    return ids, mask


def _running_max(values: Iterable[int]) -> Iterator[int]:
    """Running maximum, so that token end offsets can be bisected even around empty tokens."""
    best = -1
    for value in values:
        best = max(best, value)
        yield best


def _check_length_args(max_len: int | None, policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be None or a positive token count; got {max_len}")


def _render(
    tokenizer: Any,
    conversation: Conversation,
    template: ChatTemplate,
    max_len: int | None,
    policy: str,
    last_reply_only: bool = False,
) -> RenderedExample | str:
    """The example, or the reason it is skipped ("too_long" or "no_loss_tokens")."""
    ids, mask = tokenize_with_mask(tokenizer, template, conversation.messages(), last_reply_only)
    truncated = max_len is not None and len(ids) > max_len
    if truncated and policy == "drop":
        return "too_long"
    if truncated:
        ids, mask = ids[:max_len], mask[:max_len]
    if not any(mask):
        return "no_loss_tokens"
    return RenderedExample(
        id=conversation.id,
        input_ids=torch.tensor(ids, dtype=torch.long),
        loss_mask=torch.tensor(mask, dtype=torch.long),
        truncated=truncated,
    )


def render_example(
    tokenizer: Any,
    conversation: Conversation,
    template: ChatTemplate | str = "auto",
    max_len: int | None = None,
    policy: str = "truncate",
    last_reply_only: bool = False,
) -> RenderedExample | None:
    """Render one conversation to `input_ids` [L] and `loss_mask` [L] (L <= max_len).

    Args:
        tokenizer: the target's fast tokenizer.
        conversation: a cleaned conversation (`eagle.ge_data.sharegpt.Conversation`).
        template: a `ChatTemplate` or a name for `resolve_template` ("auto": the tokenizer's own).
        max_len: the most tokens an example may have; None for no limit.
        policy: "truncate" (keep the first max_len tokens) or "drop" (skip longer examples).
        last_reply_only: the loss mask covers the last assistant reply alone.
    Returns:
        the example, or None when it is dropped for length or has no assistant token left.
    """
    _check_length_args(max_len, policy)
    if isinstance(template, str):
        template = resolve_template(template, tokenizer)
    result = _render(tokenizer, conversation, template, max_len, policy, last_reply_only)
    return None if isinstance(result, str) else result


def render_conversations(
    tokenizer: Any,
    conversations: Iterable[Conversation],
    template: ChatTemplate | str = "auto",
    max_len: int | None = None,
    policy: str = "truncate",
    stats: RenderStats | None = None,
    last_reply_only: bool = False,
) -> Iterator[RenderedExample]:
    """Render many conversations lazily (arguments as in `render_example`); skipped ones are
    counted in `stats.skipped` by reason ("too_long", "no_loss_tokens")."""
    _check_length_args(max_len, policy)
    if isinstance(template, str):
        template = resolve_template(template, tokenizer)
    stats = RenderStats() if stats is None else stats
    for conversation in conversations:
        result = _render(tokenizer, conversation, template, max_len, policy, last_reply_only)
        if isinstance(result, str):
            stats.skipped[result] += 1
            continue
        stats.add(result)
        yield result
