"""Answer files: the JSON-lines record of what a method generated and how long it took.

One line per question (spec section 8)::

    {"question_id": 81, "model_id": "smollm2-eagle", "tstamp": 1718000000.0,
     "choices": [{"index": 0, "turns": ["...", "..."], "idxs": [41, 37],
                  "new_tokens": [120, 98], "wall_time": [2.31, 1.97]}]}

Per turn: ``turns`` is the decoded answer, ``new_tokens`` the generated tokens (stopping at the
first EOS, which counts; nothing after it), ``idxs`` the target forward passes (prefill
included, so τ = new_tokens / idxs and plain decoding has idxs == new_tokens) and ``wall_time``
the seconds the generation took. Files are appended one line at a time, so an interrupted run
resumes by skipping the question ids already present.

Each line also carries ``settings``: how it was generated (method, temperature, max new
tokens, dtype, device, threads, library versions, the EAGLE tree, ...). A file is resumed only
with the same settings, and ``speed`` compares files only when the settings in
``SHARED_SETTINGS`` agree, so a speedup never mixes runs made differently. Lines without
``settings`` (files of the original EAGLE scripts, or older ones) are read and not checked.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eagle.input_checks import NON_NEGATIVE, NON_NEGATIVE_INT, Bound, json_object_line

PER_TURN_FIELDS = ("turns", "idxs", "new_tokens", "wall_time")
# Settings that two answer files must share for their timings to be compared. The others
# (method, ea_model_path, tree, lookup, prompt_lookup_tokens) describe one method and may
# differ.
SHARED_SETTINGS = (
    "base_model_path",
    "dtype",
    "device",
    "threads",
    "torch_version",
    "transformers_version",
    "temperature",
    "top_p",
    "max_new_token",
    "max_length",
    "max_turns",
    "num_choices",
    "seed",
    "system_prompt",
)
RecordedSettings = dict[str, Any]  # an answer line's "settings" object


@dataclass(frozen=True)
class Choice:
    """One sampled conversation for a question: parallel per-turn lists."""

    index: int
    turns: list[str]
    idxs: list[int]
    new_tokens: list[int]
    wall_time: list[float]


@dataclass(frozen=True)
class Answer:
    """One answer-file line."""

    question_id: int | str
    model_id: str
    choices: list[Choice]
    tstamp: float
    settings: RecordedSettings | None = None  # how it was generated; None in files without it


def make_answer(
    question_id: int | str,
    model_id: str,
    choices: list[Choice],
    settings: RecordedSettings | None = None,
) -> Answer:
    """An answer stamped with the current time."""
    return Answer(question_id, model_id, choices, time.time(), settings)


def append_answer(path: Path, answer: Answer) -> None:
    """Append one answer as a single line and flush it, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(answer), ensure_ascii=False) + "\n")
        handle.flush()


def read_answers(path: Path) -> dict[int | str, Answer]:
    """Read and validate an answer file, keyed by question id.

    Raises ``ValueError`` naming the file and line for a line that is not a JSON object,
    missing or mistyped fields (a question id that is not an integer or a string, choices that
    are not objects), per-turn lists of different lengths, counts and times that are not
    finite numbers >= 0 (NaN, Infinity) or sum to 0, or a question id that appears twice.
    """
    if not path.is_file():
        raise ValueError(f"answer file {path} does not exist (or is not a file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"answer file {path}: cannot read it as UTF-8 text ({error})") from error
    answers: dict[int | str, Answer] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        answer = _parse_answer(line, f"{path}, line {number}")
        if answer.question_id in answers:
            raise ValueError(f"{path}, line {number}: question_id {answer.question_id!r} repeats")
        answers[answer.question_id] = answer
    return answers


def answered_ids(
    path: Path, model_id: str, settings: RecordedSettings | None = None
) -> set[int | str]:
    """Question ids already answered in ``path`` (empty when it does not exist yet).

    Raises ``ValueError`` when the file holds answers of another model id, or answers whose
    ``settings`` differ from ``settings`` on any of its keys, so two runs are never mixed in
    one file.
    """
    if not path.exists():
        return set()
    answers = read_answers(path)
    others = sorted({a.model_id for a in answers.values()} - {model_id})
    if others:
        raise ValueError(
            f"answer file {path} holds answers of model_id {others}, not {model_id!r}: "
            "pass another --answer-file or the same --model-id to resume it"
        )
    recorded = file_settings(path, answers)
    if settings is not None and recorded is not None:
        keys = [k for k in settings if k in recorded and recorded[k] != settings[k]]
        if keys:
            raise ValueError(
                f"answer file {path} was generated with {_describe(recorded, keys)}; this run "
                f"has {_describe(settings, keys)}: pass another --answer-file, or the same "
                "settings to resume it"
            )
    return set(answers)


def file_settings(path: Path | str, answers: dict[int | str, Answer]) -> RecordedSettings | None:
    """The settings every line of an answer file was generated with (None if none say).

    Raises ``ValueError`` when lines of one file were generated with different settings.
    """
    records = [a.settings for a in answers.values() if a.settings is not None]
    if not records:
        return None
    for record in records[1:]:
        keys = sorted(k for k in {*records[0], *record} if records[0].get(k) != record.get(k))
        if keys:
            raise ValueError(
                f"answer file {path} mixes runs with different settings "
                f"({_describe(records[0], keys)} against {_describe(record, keys)}); "
                "split it or regenerate"
            )
    return records[0]


def shared_settings(settings: dict[str, RecordedSettings | None]) -> RecordedSettings:
    """The ``SHARED_SETTINGS`` that the named files agree on (those that record them).

    Raises ``ValueError`` naming each shared setting whose value differs between files, with
    every file's value: their timings would not be comparable.
    """
    shared: RecordedSettings = {}
    conflicts = []
    for key in SHARED_SETTINGS:
        values = {name: s[key] for name, s in settings.items() if s is not None and key in s}
        first = next(iter(values.values()), None)
        if any(value != first for value in values.values()):
            found = ", ".join(f"{name} {value!r}" for name, value in values.items())
            conflicts.append(f"{key} ({found})")
        elif values:
            shared[key] = first
    if conflicts:
        raise ValueError(
            f"the answer files were generated with different {'; '.join(conflicts)}: compare "
            "files made with the same settings, or pass --allow-different-settings"
        )
    return shared


def _describe(settings: RecordedSettings, keys: list[str]) -> str:
    return ", ".join(f"{k}={settings.get(k)!r}" for k in keys)


def _parse_answer(line: str, where: str) -> Answer:
    """One answer line, checked field by field; errors name ``where`` (file and line)."""
    record = json_object_line(line, where, "an answer line", fix="; delete the broken line")
    missing = [k for k in ("question_id", "model_id", "choices") if k not in record]
    if missing or not isinstance(record["choices"], list) or not record["choices"]:
        raise ValueError(f"{where}: an answer needs question_id, model_id and non-empty choices")
    question_id = record["question_id"]
    if isinstance(question_id, bool) or not isinstance(question_id, int | str):
        raise ValueError(
            f"{where}: question_id must be an integer or a string, got {_kind(question_id)}"
        )
    if not isinstance(record["model_id"], str):
        raise ValueError(f"{where}: model_id must be a string, got {_kind(record['model_id'])}")
    choices = [_parse_choice(c, f"{where}: choices[{i}]") for i, c in enumerate(record["choices"])]
    _check_positive_sums(choices, where)
    settings = record.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"{where}: settings must be an object, got {type(settings).__name__}")
    if settings is not None and "temperature" in settings:
        _checked(NON_NEGATIVE, "settings.temperature", settings["temperature"], where)
    tstamp = _checked(NON_NEGATIVE, "tstamp", record.get("tstamp", 0.0), where)
    return Answer(question_id, record["model_id"], choices, tstamp, settings)


def _parse_choice(record: object, where: str) -> Choice:
    """One choice; ``where`` names the line and the choice (``..., line 3: choices[0]``)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object, got {_kind(record)}")
    missing = [k for k in PER_TURN_FIELDS if not isinstance(record.get(k), list)]
    if missing:
        raise ValueError(f"{where}: a choice needs the lists {', '.join(missing)}")
    lengths = {k: len(record[k]) for k in PER_TURN_FIELDS}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: per-turn lists differ in length: {lengths}")
    bad_text = [i for i, text in enumerate(record["turns"]) if not isinstance(text, str)]
    if bad_text:
        raise ValueError(f"{where}.turns[{bad_text[0]}] must be a string (the answer text)")
    counts = {
        field: [_checked(bound, f"{field}[{i}]", v, where) for i, v in enumerate(record[field])]
        for field, bound in (
            ("idxs", NON_NEGATIVE_INT),
            ("new_tokens", NON_NEGATIVE_INT),
            ("wall_time", NON_NEGATIVE),
        )
    }
    return Choice(
        index=int(_checked(NON_NEGATIVE_INT, "index", record.get("index", 0), where)),
        turns=list(record["turns"]),
        idxs=[int(v) for v in counts["idxs"]],
        new_tokens=[int(v) for v in counts["new_tokens"]],
        wall_time=[float(v) for v in counts["wall_time"]],
    )


def _checked(bound: Bound, name: str, value: object, where: str) -> int | float:
    """``bound.check`` with the error prefixed by the place (file, line, choice)."""
    separator = "." if where.endswith("]") else ": "
    try:
        return bound.check(name, value)
    except ValueError as error:
        raise ValueError(f"{where}{separator}{error}") from error


def _check_positive_sums(choices: list[Choice], where: str) -> None:
    """A speed needs time and tokens: a line whose new_tokens, idxs or wall_time sum to 0."""
    for field in ("new_tokens", "idxs", "wall_time"):
        if sum(sum(getattr(c, field)) for c in choices) <= 0:
            raise ValueError(
                f"{where}: {field} sums to 0 over the line's turns; a speed needs new_tokens, "
                "idxs and wall_time with positive sums"
            )


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
