"""Speed and acceptance metrics over answer files: pure functions over parsed answers.

Every sum runs over the questions that all compared files answered, all choices and turns:

- tokens/s = Σ new_tokens / Σ wall_time;
- τ (mean acceptance length) = Σ new_tokens / Σ idxs (plain decoding gives 1.00);
- speedup (total) = tokens/s of a method / tokens/s of the baseline, i.e. the ratio of total
  tokens over total time of each side — long answers weigh more;
- speedup (mean per question) = mean over questions of (that question's tokens/s of the method /
  the same for the baseline) — every question weighs the same.

Both are reported overall and per category. ``agreement`` counts turns whose text and token
count equal the baseline's: at temperature 0 in fp32 a lossless method agrees on every turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eagle.chat.formatter import common_prefix
from eagle.evaluation.answers import Answer

QuestionId = int | str
UNKNOWN_CATEGORY = "unknown"


@dataclass(frozen=True)
class Usage:
    """One question's totals over all choices and turns."""

    tokens: int
    steps: int
    seconds: float


@dataclass(frozen=True)
class Summary:
    """A method's metrics over a set of questions (speedups relative to the baseline)."""

    questions: int
    tokens: int
    steps: int
    seconds: float
    tokens_per_s: float
    tau: float
    speedup_total: float
    speedup_mean: float


@dataclass(frozen=True)
class Agreement:
    """How many turns of a method equal the baseline's (same choice index and turn)."""

    turns: int
    same_text: int
    same_tokens: int
    prefix_chars: int = 0  # characters of each turn before the first difference, summed
    base_chars: int = 0  # characters of the baseline's turns, summed

    @property
    def prefix_share(self) -> float:
        """Share of the baseline's text that the method reproduced before diverging."""
        return self.prefix_chars / self.base_chars if self.base_chars else 1.0


@dataclass
class Report:
    """Everything ``speed`` prints: per method overall, per category, coverage and agreement."""

    baseline: str
    questions: int
    missing: dict[str, list[QuestionId]] = field(default_factory=dict)
    overall: dict[str, Summary] = field(default_factory=dict)
    categories: dict[str, dict[str, Summary]] = field(default_factory=dict)
    agreement: dict[str, Agreement] = field(default_factory=dict)


def question_usage(answer: Answer) -> Usage:
    """Sum tokens, steps and seconds of all choices and turns of one answer."""
    choices = answer.choices
    usage = Usage(
        tokens=sum(sum(c.new_tokens) for c in choices),
        steps=sum(sum(c.idxs) for c in choices),
        seconds=sum(sum(c.wall_time) for c in choices),
    )
    if usage.seconds <= 0 or usage.steps <= 0 or usage.tokens <= 0:
        raise ValueError(
            f"question {answer.question_id!r} of {answer.model_id!r}: new_tokens, idxs and "
            "wall_time must have positive sums"
        )
    return usage


def summarize(
    method: dict[QuestionId, Usage], baseline: dict[QuestionId, Usage], ids: list[QuestionId]
) -> Summary:
    """Totals, tokens/s, τ and both speedups of ``method`` over the questions ``ids``."""
    tokens = sum(method[q].tokens for q in ids)
    steps = sum(method[q].steps for q in ids)
    seconds = sum(method[q].seconds for q in ids)
    base_speed = sum(baseline[q].tokens for q in ids) / sum(baseline[q].seconds for q in ids)
    ratios = [_speed(method[q]) / _speed(baseline[q]) for q in ids]
    return Summary(
        questions=len(ids),
        tokens=tokens,
        steps=steps,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
        tau=tokens / steps,
        speedup_total=(tokens / seconds) / base_speed,
        speedup_mean=sum(ratios) / len(ratios),
    )


def missing_questions(files: dict[str, dict[QuestionId, Answer]]) -> dict[str, list[QuestionId]]:
    """Per file, the question ids some other file answered but it did not (empty = complete)."""
    every = set().union(*(set(answers) for answers in files.values()))
    return {name: sorted(every - set(answers), key=str) for name, answers in files.items()}


def agreement(
    method: dict[QuestionId, Answer], baseline: dict[QuestionId, Answer], ids: list[QuestionId]
) -> Agreement:
    """Count turns (matched by question, choice index and turn) equal to the baseline's."""
    turns = same_text = same_tokens = prefix_chars = base_chars = 0
    for question_id in ids:
        base_choices = {c.index: c for c in baseline[question_id].choices}
        for choice in method[question_id].choices:
            base = base_choices.get(choice.index)
            if base is None:
                continue
            for text, tokens, base_text, base_tokens in zip(
                choice.turns, choice.new_tokens, base.turns, base.new_tokens, strict=False
            ):
                turns += 1
                same_text += text == base_text
                same_tokens += tokens == base_tokens
                prefix_chars += common_prefix(text, base_text)
                base_chars += len(base_text)
    return Agreement(turns, same_text, same_tokens, prefix_chars, base_chars)


def compare(
    files: dict[str, dict[QuestionId, Answer]],
    baseline: str,
    categories: dict[QuestionId, str] | None = None,
) -> Report:
    """Compare every file with ``files[baseline]`` over the questions they all answered.

    ``categories`` maps question ids to categories (question-file order sets the report's
    order); without it every question is in one category ``all``. Raises ValueError when the
    files share no question.
    """
    missing = missing_questions(files)
    common = [q for q in files[baseline] if all(q in answers for answers in files.values())]
    if not common:
        raise ValueError("the answer files have no question in common")
    usage = {
        name: {q: question_usage(answers[q]) for q in common} for name, answers in files.items()
    }
    report = Report(baseline, len(common), {k: v for k, v in missing.items() if v})
    for name in files:
        report.overall[name] = summarize(usage[name], usage[baseline], common)
        if name != baseline:
            report.agreement[name] = agreement(files[name], files[baseline], common)
    for category, ids in group_by_category(common, categories).items():
        report.categories[category] = {
            name: summarize(usage[name], usage[baseline], ids) for name in files
        }
    return report


def group_by_category(
    ids: list[QuestionId], categories: dict[QuestionId, str] | None
) -> dict[str, list[QuestionId]]:
    """Question ids grouped by category, categories in their question-file order."""
    if categories is None:
        return {"all": list(ids)}
    order = list(dict.fromkeys([*categories.values(), UNKNOWN_CATEGORY]))
    groups: dict[str, list[QuestionId]] = {category: [] for category in order}
    for question_id in ids:
        groups[categories.get(question_id, UNKNOWN_CATEGORY)].append(question_id)
    return {category: members for category, members in groups.items() if members}


def _speed(usage: Usage) -> float:
    return usage.tokens / usage.seconds
