"""Answer-file parsing and command-line errors, question files included (no model is loaded)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eagle.benchmarks import load_questions
from eagle.evaluation import gen_answer, gen_baseline_answer, gen_ea_answer, speed
from eagle.evaluation.answers import answered_ids, read_answers
from eagle.model.loading import model_spec


def _lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


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
        (gen_ea_answer.main, [*BASE, "--device", "tpu"], "--device must be one of cpu, cuda"),
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
    config = model_spec(args)
    assert (config.total_token, config.depth, config.top_k) == (60, 7, 10)  # the original's
    (head / "tree.json").write_text('{"total_token": 12, "depth": 5, "top_k": 4}')
    config = model_spec(args)
    assert (config.total_token, config.depth, config.top_k) == (12, 5, 4)
    args = parser.parse_args([*BASE, "--ea-model-path", str(head), "--depth", "3"])
    config = model_spec(args)
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


# -- every flag, question line and answer line is checked, naming the flag or the file:line -------

NAN, INF = float("nan"), float("inf")
DEEP = "[" * 100_000 + "]" * 100_000  # beyond the JSON decoder's recursion limit
HF = [*BASE, "--method", "hf_generate"]  # needs no head


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--top-p", "5"], "--top-p must be in [0, 1], got 5.0"),
        (["--top-p", "nan"], "--top-p must be a finite number in [0, 1], got nan"),
        (["--top-p", "-0.1"], "--top-p must be in [0, 1], got -0.1"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
        (["--temperature", "inf"], "--temperature must be a finite number >= 0, got inf"),
        (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
        (["--max-length", "0"], "--max-length must be >= 1, got 0"),
        (["--num-choices", "0"], "--num-choices must be >= 1, got 0"),
        (["--max-turns", "0"], "--max-turns must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--seed", "-1"], "--seed must be in [0, 9223372036854775807], got -1"),
        (["--seed", str(2**64)], "--seed must be in [0, 9223372036854775807]"),
        (["--prompt-lookup-tokens", "0"], "--prompt-lookup-tokens must be >= 1, got 0"),
        (["--total-token", "0"], "--total-token must be -1 or >= 1, got 0"),
        (["--depth", "0"], "--depth must be >= 1, got 0"),
        (["--top-k", "-2"], "--top-k must be >= 1, got -2"),
        (["--question-begin", "-1"], "--question-begin must be >= 0, got -1"),
        (["--model-id", "../x"], "--model-id must be a plain name"),  # wrote outside outputs/
        (["--model-id", ".."], "--model-id must be a plain name"),
        (["--model-id", "a\\b"], "--model-id must be a plain name"),
        (["--model-id", ""], "--model-id must be a plain name"),
        (["--bench-name", ".."], "--bench-name must be a plain name"),
    ],
)
def test_every_generation_flag_is_checked_before_loading(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gen_ea_answer.main([*HF, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_baseline_entry_point_checks_the_same_flags(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gen_baseline_answer.main([*BASE, "--ea-model-path", "h", "--top-p", "nan"])
    assert exit_info.value.code == 2
    assert "--top-p must be a finite number in [0, 1], got nan" in capsys.readouterr().err


def test_top_k_beyond_the_heads_vocabulary_fails_before_loading(tmp_path, capsys) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 96}))
    with pytest.raises(SystemExit):
        gen_ea_answer.main([*BASE, "--ea-model-path", str(tmp_path), "--top-k", "97"])
    assert "--top-k 97 (or the head's tree.json) exceeds" in capsys.readouterr().err


def test_default_answer_files_stay_inside_outputs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for model_id in ("m", "..m", "m.."):
        (path,) = [p for _, p in _files("--model-id", model_id).values()]
        assert path.resolve().is_relative_to((tmp_path / "outputs").resolve())
    explicit = _files("--model-id", "org/m", "--answer-file", "mine.jsonl")  # names no file
    assert explicit == {"eagle": ("org/m", Path("mine.jsonl"))}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "a question line must be a JSON object, got list"),
        ('{"turns": ["q"]}', "a question needs a 'question_id'"),
        (DEEP, "JSON nested too deeply"),
        ({"question_id": [1], "turns": ["a"]}, "'question_id' must be an integer or a"),
        ({"question_id": True, "turns": ["a"]}, "'question_id' must be an integer"),
        ({"question_id": 1.5, "turns": ["a"]}, "'question_id' must be an integer"),
        ({"question_id": None, "turns": ["a"]}, "'question_id' must be an integer"),
        ({"question_id": "", "turns": ["a"]}, "'question_id' must be an integer"),
        ({"question_id": 2, "turns": [""]}, "'turns' item 0 is empty"),
        ({"question_id": 2, "turns": ["a", "  \n"]}, "'turns' item 1 is empty"),
        ({"question_id": 2, "turns": ["a", 3]}, "'turns' must be a non-empty list of strings"),
        ({"question_id": 2, "turns": "a"}, "'turns' must be a non-empty list of strings"),
        ({"question_id": 2, "turns": ["a"], "category": 3}, "'category' must be a non-"),
        ({"question_id": 2, "turns": ["a"], "category": ""}, "'category' must be a non-empty"),
    ],
)
def test_question_lines_are_checked_field_by_field(tmp_path: Path, line, message, capsys) -> None:
    good = {"question_id": 1, "turns": ["fine"]}
    path = _lines(tmp_path / "q.jsonl", [good, line])
    with pytest.raises(ValueError) as error:
        load_questions(str(path))
    assert str(error.value).startswith(f"{path}, line 2: ") and message in str(error.value)
    with pytest.raises(SystemExit) as exit_info:  # the command line: before any model loads
        gen_ea_answer.main([*HF, "--bench-name", str(path)])
    assert exit_info.value.code == 2
    assert f"{path}, line 2: " in (err := capsys.readouterr().err) and message in err


def _answer_line(**fields) -> dict:
    return {"question_id": 2, "model_id": "m", "choices": [_choice()], "tstamp": 0.0, **fields}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "an answer line must be a JSON object, got list"),
        ('"text"', "an answer line must be a JSON object, got str"),
        (DEEP, "JSON nested too deeply"),
        (_answer_line(question_id=[2]), "question_id must be an integer or a string, got"),
        (_answer_line(question_id=None), "question_id must be an integer or a string, got null"),
        (_answer_line(question_id=True), "question_id must be an integer or a string, got bool"),
        (_answer_line(model_id=5), "model_id must be a string, got int"),
        (_answer_line(choices=["x"]), "choices[0] must be an object, got str"),
        (_answer_line(choices={"0": _choice()}), "needs question_id, model_id and non-empty"),
        (_answer_line(choices=[_choice(turns="t")]), "choices[0]: a choice needs the lists turns"),
        (_answer_line(choices=[_choice(turns=[3])]), "choices[0].turns[0] must be a string"),
        (
            _answer_line(choices=[_choice(new_tokens=[NAN])]),
            "choices[0].new_tokens[0] must be an integer >= 0, got nan",
        ),
        (
            _answer_line(choices=[_choice(), _choice(idxs=[INF])]),
            "choices[1].idxs[0] must be an integer >= 0, got inf",
        ),
        (_answer_line(choices=[_choice(idxs=[1.5])]), "choices[0].idxs[0] must be an integer"),
        (_answer_line(choices=[_choice(idxs=["1"])]), "choices[0].idxs[0] must be an integer"),
        (
            _answer_line(choices=[_choice(wall_time=[INF])]),  # printed a silent 0.00x
            "choices[0].wall_time[0] must be a finite number >= 0, got inf",
        ),
        (_answer_line(choices=[_choice(wall_time=[NAN])]), "wall_time[0] must be a finite number"),
        (_answer_line(choices=[_choice(wall_time=[-1.0])]), "wall_time[0] must be >= 0, got -1.0"),
        (_answer_line(choices=[_choice(wall_time=[0.0])]), "wall_time sums to 0"),
        (_answer_line(choices=[_choice(new_tokens=[0])]), "new_tokens sums to 0"),
        (_answer_line(choices=[_choice(index="a")]), "choices[0].index must be an integer >= 0"),
        (_answer_line(tstamp="x"), "tstamp must be a finite number >= 0, got 'x'"),
        (_answer_line(tstamp=NAN), "tstamp must be a finite number >= 0, got nan"),
        (
            _answer_line(settings={"temperature": "hot"}),
            "settings.temperature must be a finite number >= 0, got 'hot'",
        ),
    ],
)
def test_answer_lines_are_checked_field_by_field(tmp_path: Path, line, message, capsys) -> None:
    good = {"question_id": 1, "model_id": "m", "choices": [_choice()], "tstamp": 0.0}
    path = _lines(tmp_path / "a.jsonl", [good, line])
    with pytest.raises(ValueError) as error:
        read_answers(path)
    assert str(error.value).startswith(f"{path}, line 2: ") and message in str(error.value)
    baseline = _lines(tmp_path / "b.jsonl", [good])
    with pytest.raises(SystemExit) as exit_info:  # speed: exit 2 naming the file and line
        speed.main(["--ea-answers", str(path), "--baseline-answers", str(baseline)])
    assert exit_info.value.code == 2
    assert f"{path}, line 2: " in (err := capsys.readouterr().err) and message in err


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8\n", None])
def test_unreadable_answer_files_are_named(tmp_path: Path, content, capsys) -> None:
    path = tmp_path / "a.jsonl"
    if content is None:
        path.mkdir()  # a folder given as the answer file
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"answer file {path}"):
        read_answers(path)
