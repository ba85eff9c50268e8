"""Speed metrics on hand-made answer files whose expected numbers are worked out by hand.

Baseline (plain decoding, one token per step):
  q1: turns of 10 and 20 tokens in 1 s and 2 s  -> 30 tokens / 3 s = 10 tok/s
  q2: one turn of 40 tokens in 2 s              -> 20 tok/s
  total 70 tokens / 5 s = 14 tok/s
EAGLE:
  q1: 10 + 20 tokens in 4 + 6 steps, 0.5 + 0.5 s -> 30 tok/s (3x the baseline's q1)
  q2: 40 tokens in 10 steps, 0.5 s               -> 80 tok/s (4x)
  total 70 tokens / 1.5 s = 46.67 tok/s: speedup (total) 46.67 / 14 = 10/3,
  speedup (mean per question) (3 + 4) / 2 = 3.5, tau = 70 / 20 = 3.5.
hf_generate (one token per step): q1 30 tokens in 2 s (1.5x), q2 40 tokens in 2 s (1x):
  total 70 / 4 s = 17.5 tok/s -> 1.25x; mean (1.5 + 1) / 2 = 1.25.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eagle.evaluation import speed
from eagle.evaluation.answers import Answer, Choice, append_answer, read_answers
from eagle.evaluation.metrics import compare, question_usage

QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["a", "b"]},
    {"question_id": 2, "category": "math", "turns": ["c"]},
    {"question_id": 3, "category": "math", "turns": ["d"]},
]


def _answer(qid: int, tokens: list[int], steps: list[int], seconds: list[float]) -> Answer:
    texts = [f"answer {qid}.{t}" for t in range(len(tokens))]
    return Answer(qid, "m", [Choice(0, texts, steps, tokens, seconds)], 0.0)


def _write(path: Path, answers: list[Answer]) -> Path:
    for answer in answers:
        append_answer(path, answer)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    baseline = [
        _answer(1, [10, 20], [10, 20], [1.0, 2.0]),
        _answer(2, [40], [40], [2.0]),
        _answer(3, [5], [5], [1.0]),  # EAGLE never answered q3: reported, left out
    ]
    eagle = [_answer(1, [10, 20], [4, 6], [0.5, 0.5]), _answer(2, [40], [10], [0.5])]
    hf = [_answer(1, [10, 20], [10, 20], [1.0, 1.0]), _answer(2, [40], [40], [2.0])]
    questions = tmp_path / "question.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return {
        "baseline": _write(tmp_path / "baseline.jsonl", baseline),
        "eagle": _write(tmp_path / "eagle.jsonl", eagle),
        "hf": _write(tmp_path / "hf.jsonl", hf),
        "questions": questions,
    }


def _argv(files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "--ea-answers",
        str(files["eagle"]),
        "--baseline-answers",
        str(files["baseline"]),
        "--bench-name",
        str(files["questions"]),
        *extra,
    ]


def test_overall_speedup_both_aggregations_and_tau(files: dict[str, Path]) -> None:
    answers = {name: read_answers(files[name]) for name in ("eagle", "baseline")}
    report = compare(answers, "baseline")
    eagle, baseline = report.overall["eagle"], report.overall["baseline"]
    assert report.questions == 2
    assert report.missing == {"eagle": [3]}
    assert (eagle.tokens, eagle.steps, eagle.seconds) == (70, 20, 1.5)
    assert eagle.tokens_per_s == pytest.approx(70 / 1.5)
    assert baseline.tokens_per_s == pytest.approx(14.0)
    assert eagle.speedup_total == pytest.approx(10 / 3)
    assert eagle.speedup_mean == pytest.approx(3.5)
    assert eagle.tau == pytest.approx(3.5)
    assert baseline.tau == baseline.speedup_total == baseline.speedup_mean == 1.0
    assert list(report.categories) == ["all"]


def test_per_category_follows_question_file(files: dict[str, Path]) -> None:
    report = speed.main(_argv(files))
    assert list(report.categories) == ["writing", "math"]
    writing, math = report.categories["writing"]["eagle"], report.categories["math"]["eagle"]
    assert writing.speedup_total == pytest.approx(3.0) == writing.speedup_mean
    assert math.speedup_total == pytest.approx(4.0) == math.speedup_mean
    assert (writing.tau, math.tau) == (pytest.approx(3.0), pytest.approx(4.0))


def test_extra_answers_compared_with_the_same_baseline(files: dict[str, Path]) -> None:
    report = speed.main(_argv(files, "--extra-answers", f"hf_generate={files['hf']}"))
    hf = report.overall["hf_generate"]
    assert hf.speedup_total == pytest.approx(1.25)
    assert hf.speedup_mean == pytest.approx(1.25)
    assert hf.tau == 1.0
    assert report.missing == {"eagle": [3], "hf_generate": [3]}


def test_agreement_counts_identical_turns(files: dict[str, Path]) -> None:
    report = speed.main(_argv(files, "--extra-answers", f"hf={files['hf']}"))
    agree = report.agreement["eagle"]
    assert (agree.turns, agree.same_text, agree.same_tokens) == (3, 3, 3)


def test_table_and_json_output(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "report" / "speed.json"
    speed.main(_argv(files, "--json", str(out)))
    printed = capsys.readouterr().out
    assert "speedup (total)" in printed and "speedup (mean/question)" in printed
    assert "3.33x" in printed and "3.50x" in printed
    assert "WARNING: eagle lacks 1 question(s) others answered: 3" in printed
    data = json.loads(out.read_text())
    assert data["overall"]["eagle"]["speedup_total"] == pytest.approx(10 / 3)
    assert data["categories"]["math"]["eagle"]["tau"] == pytest.approx(4.0)
    assert data["missing"] == {"eagle": [3]}
    assert "speedup_mean" in data["definitions"]


def test_plot_written(files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs" / "speed.png"
    speed.main(_argv(files, "--plot", str(out)))
    assert out.read_bytes().startswith(b"\x89PNG")


def test_non_plain_baseline_is_flagged(files: dict[str, Path], capsys) -> None:
    argv = ["--ea-answers", str(files["baseline"]), "--baseline-answers", str(files["eagle"])]
    speed.main(argv)
    assert "the baseline's tau is 3.500, not 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--extra-answers", "nofile"], "--extra-answers expects NAME=FILE"),
        (["--extra-answers", "eagle=x.jsonl"], "'eagle' is already used"),
        (["--bench-name", "nope"], "--bench-name 'nope' is neither a known benchmark"),
    ],
)
def test_bad_speed_arguments(files: dict[str, Path], extra, message, capsys) -> None:
    argv = ["--ea-answers", str(files["eagle"]), "--baseline-answers", str(files["baseline"])]
    with pytest.raises(SystemExit):
        speed.main(argv + extra)
    assert message in capsys.readouterr().err


def test_missing_answer_file_and_no_common_question(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        speed.main(["--ea-answers", "absent.jsonl", "--baseline-answers", "absent2.jsonl"])
    assert "answer file absent.jsonl does not exist" in capsys.readouterr().err
    a = _write(tmp_path / "a.jsonl", [_answer(1, [3], [1], [1.0])])
    b = _write(tmp_path / "b.jsonl", [_answer(2, [3], [3], [1.0])])
    with pytest.raises(SystemExit):
        speed.main(["--ea-answers", str(a), "--baseline-answers", str(b)])
    assert "no question in common" in capsys.readouterr().err


def test_zero_time_is_an_error_not_infinity() -> None:
    with pytest.raises(ValueError, match="positive sums"):
        question_usage(_answer(1, [3], [1], [0.0]))


def test_agreement_measures_the_reproduced_prefix() -> None:
    from eagle.evaluation.answers import Answer, Choice
    from eagle.evaluation.metrics import agreement

    def answer(*texts: str) -> Answer:
        choice = Choice(
            0, list(texts), [1] * len(texts), [len(t) for t in texts], [1.0] * len(texts)
        )
        return Answer(1, "m", [choice], 0.0)

    agree = agreement({1: answer("hello world", "abc")}, {1: answer("hello there", "abc")}, [1])
    assert (agree.turns, agree.same_text, agree.same_tokens) == (2, 1, 2)
    assert agree.prefix_chars == 6 + 3 and agree.base_chars == 11 + 3
    assert agree.prefix_share == pytest.approx(9 / 14)


def test_plot_title_names_model_head_tree_dtype_threads_and_machine() -> None:
    common = {"base_model_path": "smollm2-135m-instruct", "dtype": "bfloat16", "threads": 2}
    machine = {"machine": "AMD EPYC, 2 cores"}
    settings = {
        "eagle": {**common, **machine, "ea_model_path": "/x/heads/h3",
                  "tree": {"total_token": 8, "depth": 4, "top_k": 4}},
        "baseline": {**common, **machine},
        "old": None,  # a file without recorded settings adds nothing
    }  # fmt: skip
    title = speed.plot_title(settings)
    assert title == (
        "smollm2-135m-instruct | head h3 | tree 8/4/4 | bfloat16 | 2 threads | AMD EPYC, 2 cores"
    )
    assert speed.plot_title({"old": None}) == ""


def test_machine_name_says_the_cpu_and_its_cores() -> None:
    import os

    from eagle.evaluation.gen_answer import machine_name

    name = machine_name("cpu")
    assert name.endswith(f", {os.cpu_count()} cores") and len(name) > len(" cores") + 3
