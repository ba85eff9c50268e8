"""The chat logic behind the web UI, free of gradio so that it is testable on its own.

A conversation is a list of ``Turn`` (a user message and the answer given to it). To answer the
last turn, the conversation is rendered with the chat template (``ChatFormatter`` from
``eagle.chat``: the same prompts and template names as the evaluation), then ``stream_answer``
runs the decode loop step by step and yields an ``AnswerUpdate`` after every verification step:
the answer text so far, the same text cut into ``Segment``s by source, and live figures. A
segment's ``source`` is "head" (drafted by the EAGLE head and accepted by the target),
"context" (drafted by the context lookup, ``eagle.model.lookup``, and accepted: the step's
``accepted_from_context`` splits its accepted drafts into runs) or "target" (the target's own
bonus token of each step, and the prefill's first token). ``render_answer`` marks the two
drafted sources with their own classes (``HIGHLIGHT_CLASS``, ``CONTEXT_CLASS``).

Text is decoded from all answer ids at every step rather than token by token, so multi-byte
characters and tokenizers that merge pieces come out right; a trailing incomplete character
(U+FFFD) is held back until the next step completes it.

``checked_settings`` turns the page's raw inputs into ``Settings`` (the EAGLE and context
switches and the library's ``GenerationConfig``) on the server, whatever a request sends:
boolean switches, finite numbers within the sliders' ranges, an integer token budget; anything
else is a ``SettingsError`` naming the field. The context switch on means the model's own
``LookupSettings`` (``EaModel.lookup``), else the defaults; with EAGLE off it drafts alone
(prompt lookup decoding through the same loop).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from eagle.chat.formatter import ChatFormatter, common_prefix
from eagle.input_checks import PROBABILITY, Bound
from eagle.model.generate import GenerationConfig
from eagle.model.verify import SamplingParams

HIGHLIGHT_CLASS = "eagle-drafted"  # text drafted by the head
CONTEXT_CLASS = "eagle-context"  # text drafted from the context
_INCOMPLETE = "\ufffd"
TEMPERATURE = Bound(0.0, 2.0)  # the page's slider range; 0 = greedy
MAX_NEW_TOKENS_FLOOR = 2048  # the max-new-tokens slider reaches at least this


Source = Literal["target", "head", "context"]
SOURCES: tuple[Source, ...] = get_args(Source)
MARK_CLASSES: dict[Source, str] = {"head": HIGHLIGHT_CLASS, "context": CONTEXT_CLASS}


@dataclass(frozen=True)
class Segment:
    """A piece of answer text and where its tokens came from: "target" (the target's own
    token), "head" (drafted by the head and accepted) or "context" (drafted from the context
    and accepted)."""

    text: str
    source: Source = "target"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")

    @property
    def drafted(self) -> bool:
        return self.source != "target"


@dataclass(eq=False)  # compared by identity: a turn is a place in one conversation
class Turn:
    """One exchange: the user's message and the answer given so far (None: not yet asked)."""

    user: str
    answer: str | None = ""
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """What the user chose for one answer: EAGLE or not, drafts from the context or not, and
    the generation config (sampling and limits; the tree is the model's). ``use_lookup``
    decides the lookup: ``stream_answer`` sets the config's ``lookup`` from it."""

    use_draft: bool = True  # False: plain decoding through the same target calls (A/B baseline)
    use_lookup: bool = False  # True: the model's LookupSettings, else the defaults
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=256)
    )


class SettingsError(ValueError):
    """A setting of the page (sent by the browser or a raw request) is outside its range."""


def max_new_tokens_limit(initial: int) -> int:
    """The top of the max-new-tokens slider for a page opened with ``initial``."""
    return max(MAX_NEW_TOKENS_FLOOR, initial)


def checked_settings(
    use_draft: object,
    use_lookup: object,
    temperature: object,
    top_p: object,
    max_new_tokens: object,
    limit: int,
    max_length: int = 2048,
) -> Settings:
    """The page's raw inputs as ``Settings``, checked on the server: a raw request can send
    anything (NaN passes the sliders' own bounds). Raises ``SettingsError`` naming the field.
    ``max_length`` (prompt + answer positions) is the page's, not the user's."""
    if not isinstance(use_draft, bool):
        raise SettingsError(f"EAGLE must be true or false, got {use_draft!r}")
    if not isinstance(use_lookup, bool):
        raise SettingsError(f"Drafts from the context must be true or false, got {use_lookup!r}")
    try:
        sampling = SamplingParams(
            float(TEMPERATURE.check("Temperature", temperature)),
            float(PROBABILITY.check("Top-p", top_p)),
        )
        new = int(Bound(1, limit, integer=True).check("Max new tokens", max_new_tokens))
        return Settings(use_draft, use_lookup, GenerationConfig(sampling, new, max_length))
    except ValueError as error:
        raise SettingsError(str(error)) from error


@dataclass(frozen=True)
class Figures:
    """Live speed figures of the answer being generated."""

    new_tokens: int
    steps: int  # target forward passes, the prefill included
    seconds: float  # since the request started, the prefill included
    use_draft: bool
    lookup: bool = False  # drafts from the context

    @property
    def method(self) -> str:
        """How the answer is drafted, as the figures line names it."""
        if self.lookup:
            return "EAGLE + context lookup" if self.use_draft else "context lookup"
        return "EAGLE" if self.use_draft else "plain decoding"

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_step(self) -> float:
        """The compression ratio: generated tokens per target forward pass (tau)."""
        return self.new_tokens / self.steps if self.steps else 0.0

    def describe(self) -> str:
        return (
            f"**{self.method}** · **{self.tokens_per_second:.1f} tokens/s** · "
            f"**{self.tokens_per_step:.2f} tokens per target step** · "
            f"{self.new_tokens} tokens in {self.steps} steps, {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class AnswerUpdate:
    text: str
    segments: tuple[Segment, ...]
    figures: Figures
    finished: bool
    stopped: bool = False  # the stop flag ended the answer early


class StopFlag:
    """Set from another thread to end a running answer after its current step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __deepcopy__(self, memo: dict) -> StopFlag:
        return StopFlag()  # gradio copies a State's initial value for every session


def conversation_messages(turns: list[Turn]) -> list[dict[str, str]]:
    """Chat messages asking for the last turn's answer (earlier answers included)."""
    messages: list[dict[str, str]] = []
    for turn in turns[:-1]:  # answered: the web UI answers the first pending turn
        messages += [
            {"role": "user", "content": turn.user},
            {"role": "assistant", "content": turn.answer or ""},
        ]
    return [*messages, {"role": "user", "content": turns[-1].user}]


def split_step(new_ids: list[int], accepted: int) -> tuple[list[int], list[int]]:
    """Cut one step's new ids into (drafted and accepted, the target's own).

    A step emits its accepted drafts, then the bonus token; an EOS or the token budget can cut
    that list short, so fewer than ``accepted`` drafts may remain and the bonus may be gone.
    """
    drafted = min(accepted, len(new_ids))
    return new_ids[:drafted], new_ids[drafted:]


def step_runs(
    new_ids: list[int], accepted: int, from_context: list[bool] | None = None
) -> list[tuple[Source, list[int]]]:
    """One step's new ids as runs of (source, ids), in order: the accepted drafts split by
    ``from_context`` (per accepted draft, True: drafted from the context; None: all by the
    head), then the target's own (``split_step`` cuts the two)."""
    drafted, own = split_step(new_ids, accepted)
    flags = from_context if from_context is not None else [False] * len(drafted)
    runs: list[tuple[Source, list[int]]] = []
    for token, context in zip(drafted, flags, strict=False):  # an EOS may cut the drafts
        source: Source = "context" if context else "head"
        if runs and runs[-1][0] == source:
            runs[-1][1].append(token)
        else:
            runs.append((source, [token]))
    return [*runs, ("target", own)] if own else runs


class AnswerText:
    """Answer ids -> text and segments by source, kept consistent as ids arrive."""

    def __init__(self, formatter: ChatFormatter) -> None:
        self.formatter = formatter
        self.ids: list[int] = []
        self.segments: list[Segment] = []
        self.text = ""

    def extend(self, ids: list[int], source: Source, final: bool = False) -> None:
        if not ids and not final:
            return
        self.ids += ids
        text = self.formatter.answer_text(self.ids)
        if not final:
            text = text.rstrip(_INCOMPLETE)
        keep = common_prefix(self.text, text)
        if keep < len(self.text):  # decoding rewrote earlier text: keep what still holds
            self.segments = _truncate(self.segments, keep)
        if len(text) > keep:
            self._append(Segment(text[keep:], source))
        self.text = text

    def _append(self, segment: Segment) -> None:
        if self.segments and self.segments[-1].source == segment.source:
            last = self.segments.pop()
            segment = Segment(last.text + segment.text, segment.source)
        self.segments.append(segment)


def stream_answer(
    model,
    formatter: ChatFormatter,
    turns: list[Turn],
    settings: Settings,
    stop: StopFlag | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[AnswerUpdate]:
    """Answer the last turn of ``turns`` with ``model`` (an ``EaModel``), step by step.

    With ``settings.use_lookup`` the context drafts too, with the model's ``lookup`` settings
    (the defaults when it has none); without it never, whatever the model's default. ``stop``,
    when given, is cleared when the answer starts and checked after every step. Raises
    ValueError before the first update when the prompt leaves no room under the settings'
    ``max_length`` (positions).
    """
    import torch  # here, so that importing the UI modules stays light

    if stop is not None:
        stop.clear()
    prompt = formatter.prompt_ids(conversation_messages(turns))
    input_ids = torch.tensor([prompt], dtype=torch.long)
    start = clock()
    lookup = (model.lookup or True) if settings.use_lookup else False
    config = replace(settings.generation, lookup=lookup)
    steps = model.generate_steps(input_ids, use_draft=settings.use_draft, config=config)
    answer, emitted = AnswerText(formatter), 0
    for step in steps:
        new_ids = step.ids[0, len(prompt) + emitted : len(prompt) + step.new_tokens].tolist()
        emitted = step.new_tokens
        from_context = step.accepted_from_context
        flags = None if from_context is None else from_context.tolist()
        stopped = not step.finished and stop is not None and stop.is_set()
        finished = step.finished or stopped
        for source, ids in step_runs(new_ids, step.accepted, flags):
            answer.extend(ids, source)
        answer.extend([], "target", final=finished)  # a held-back character comes out now
        seconds, methods = clock() - start, (settings.use_draft, settings.use_lookup)
        figures = Figures(step.new_tokens, step.steps, seconds, *methods)
        yield AnswerUpdate(answer.text, tuple(answer.segments), figures, finished, stopped)
        if stopped:
            return


def render_answer(segments: tuple[Segment, ...] | list[Segment], highlight: bool) -> str:
    """The chat bubble's text; with ``highlight``, drafted text is wrapped in ``<mark>`` of
    class ``HIGHLIGHT_CLASS`` (drafted by the head) or ``CONTEXT_CLASS`` (from the context).

    Highlighted answers are HTML-escaped and newlines become ``<br>``: markdown would otherwise
    split spans across blocks or read model output as markup.
    """
    text = "".join(s.text for s in segments)
    if not highlight:
        return text
    parts = []
    for s in segments:
        escaped = html.escape(s.text).replace("\n", "<br>")
        css_class = MARK_CLASSES.get(s.source)
        parts.append(f'<mark class="{css_class}">{escaped}</mark>' if css_class else escaped)
    return f'<div class="eagle-answer">{"".join(parts)}</div>'


def _truncate(segments: list[Segment], length: int) -> list[Segment]:
    kept, total = [], 0
    for s in segments:
        if total + len(s.text) >= length:
            if length > total:
                kept.append(Segment(s.text[: length - total], s.source))
            return kept
        kept.append(s)
        total += len(s.text)
    return kept
