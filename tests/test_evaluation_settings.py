"""Answer files record how they were generated; resumption and ``speed`` refuse mixed settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eagle.evaluation import speed
from eagle.evaluation.answers import (
    Answer,
    Choice,
    answered_ids,
    append_answer,
    file_settings,
    read_answers,
    shared_settings,
)

GREEDY = {"dtype": "float32", "device": "cpu", "threads": 2, "temperature": 0.0, "top_p": 0.0}
GREEDY_EAGLE = {**GREEDY, "method": "eagle", "tree": {"total_token": 4, "depth": 2, "top_k": 4}}
GREEDY_BASELINE = {**GREEDY, "method": "baseline"}


def _answer(qid: int, tokens: int, steps: int, seconds: float, settings: dict | None) -> Answer:
    choice = Choice(0, [f"answer {qid}"], [steps], [tokens], [seconds])
    return Answer(qid, "m", [choice], 0.0, settings)


def _write(path: Path, answers: list[Answer]) -> Path:
    for answer in answers:
        append_answer(path, answer)
    return path


def _pair(tmp_path: Path, eagle: dict | None, baseline: dict | None) -> list[str]:
    a = _write(tmp_path / "eagle.jsonl", [_answer(1, 30, 10, 1.0, eagle)])
    b = _write(tmp_path / "baseline.jsonl", [_answer(1, 30, 30, 2.0, baseline)])
    return ["--ea-answers", str(a), "--baseline-answers", str(b)]


def test_settings_are_written_and_read_back_and_old_lines_have_none(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", [_answer(1, 3, 1, 1.0, GREEDY_EAGLE)])
    assert json.loads(path.read_text())["settings"]["tree"] == {
        "total_token": 4,
        "depth": 2,
        "top_k": 4,
    }
    with path.open("a") as handle:  # a line of the original format: no settings field
        line = {"question_id": 2, "model_id": "m", "tstamp": 0.0}
        choice = {"index": 0, "turns": ["x"], "idxs": [1], "new_tokens": [1], "wall_time": [1.0]}
        handle.write(json.dumps({**line, "choices": [choice]}) + "\n")
    answers = read_answers(path)
    assert answers[1].settings == GREEDY_EAGLE
    assert answers[2].settings is None
    assert file_settings(path, answers) == GREEDY_EAGLE  # silent lines are not checked


def test_malformed_settings_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    choice = {"index": 0, "turns": ["x"], "idxs": [1], "new_tokens": [1], "wall_time": [1.0]}
    record = {"question_id": 1, "model_id": "m", "choices": [choice], "settings": [0.0]}
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"a.jsonl, line 1: settings must be an object, got list"):
        read_answers(path)


def test_resumption_requires_the_same_settings(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", [_answer(1, 3, 1, 1.0, GREEDY_EAGLE)])
    assert answered_ids(path, "m", GREEDY_EAGLE) == {1}
    assert answered_ids(path, "m", GREEDY) == {1}  # a subset: the keys known before loading
    sampled = {**GREEDY_EAGLE, "temperature": 1.0}
    with pytest.raises(
        ValueError, match=r"generated with temperature=0.0; this run has temperature=1.0"
    ):
        answered_ids(path, "m", sampled)
    bigger = {**GREEDY_EAGLE, "tree": {"total_token": 8, "depth": 2, "top_k": 4}}
    with pytest.raises(ValueError, match="tree="):
        answered_ids(path, "m", bigger)
    legacy = _write(tmp_path / "old.jsonl", [_answer(1, 3, 1, 1.0, None)])
    assert answered_ids(legacy, "m", sampled) == {1}


def test_a_file_mixing_settings_is_refused(tmp_path: Path) -> None:
    answers = [_answer(1, 3, 1, 1.0, GREEDY), _answer(2, 3, 1, 1.0, {**GREEDY, "threads": 8})]
    path = _write(tmp_path / "a.jsonl", answers)
    with pytest.raises(ValueError, match=r"mixes runs with different settings \(threads=2"):
        file_settings(path, read_answers(path))


def test_shared_settings_ignore_method_settings_and_name_every_conflict() -> None:
    shared = shared_settings({"eagle": GREEDY_EAGLE, "baseline": GREEDY_BASELINE, "old": None})
    assert shared == GREEDY  # method and tree may differ between methods
    other = {**GREEDY_BASELINE, "temperature": 1.0, "dtype": "bfloat16"}
    with pytest.raises(ValueError) as error:
        shared_settings({"eagle": GREEDY_EAGLE, "baseline": other})
    assert "dtype (eagle 'float32', baseline 'bfloat16')" in str(error.value)
    assert "temperature (eagle 0.0, baseline 1.0)" in str(error.value)


def test_speed_refuses_files_generated_differently(tmp_path: Path, capsys) -> None:
    eagle = {**GREEDY_EAGLE, "max_new_token": 256}
    argv = _pair(tmp_path, eagle, {**GREEDY_BASELINE, "max_new_token": 128})
    with pytest.raises(SystemExit):
        speed.main(argv)
    err = capsys.readouterr().err
    assert "different max_new_token (eagle 256, baseline 128)" in err
    assert "--allow-different-settings" in err
    report = speed.main([*argv, "--allow-different-settings"])
    assert report.overall["eagle"].speedup_total == pytest.approx(2.0)


def test_speed_prints_settings_and_says_sampled_text_is_not_expected_to_match(
    tmp_path: Path, capsys
) -> None:
    sampled = {**GREEDY, "temperature": 1.0}
    eagle = {**sampled, "method": "eagle", "tree": {"total_token": 4, "depth": 2, "top_k": 4}}
    argv = _pair(tmp_path, eagle, {**sampled, "method": "baseline"})
    out_json = tmp_path / "speed.json"
    speed.main([*argv, "--json", str(out_json)])
    out = capsys.readouterr().out
    assert "settings: dtype float32, device cpu, threads 2, temperature 1.0, top_p 0.0" in out
    assert "eagle settings: tree {'total_token': 4, 'depth': 2, 'top_k': 4}" in out
    assert "(sampled at temperature 1: not expected to match)" in out
    assert json.loads(out_json.read_text())["settings"]["baseline"] == {
        **sampled,
        "method": "baseline",
    }
    speed.main(_pair(tmp_path / "greedy", GREEDY_EAGLE, None))
    out = capsys.readouterr().out
    assert "baseline settings: not recorded in the file" in out
    assert "not expected to match" not in out


def test_tree_record_of_dynamic_and_static_trees() -> None:
    from eagle.evaluation.methods import tree_record
    from eagle.model.draft import DynamicTree
    from eagle.model.tree import StaticTree

    assert tree_record(DynamicTree(8, 3, 4)) == {"total_token": 8, "depth": 3, "top_k": 4}
    static = StaticTree.from_paths([[1], [0], [0, 0]])
    assert tree_record(static) == {"static_paths": [[0], [1], [0, 0]]}
    json.dumps(tree_record(static))  # the record goes into a JSON line as it is
