"""The tree-settings sweep end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
from helpers import make_model, random_head
from test_ea_model import _save_tokenizer

from eagle.evaluation import tree_sweep
from eagle.model.checkpoint import save_head
from eagle.model.target import TargetModel


def test_sweep_measures_every_setting_and_plain_twice(tmp_path, capsys, one_thread):
    model = make_model("llama")
    model.save_pretrained(tmp_path / "target")
    _save_tokenizer(tmp_path / "target")
    save_head(random_head(TargetModel(model), "eagle3"), tmp_path / "head")
    questions = tmp_path / "q.jsonl"
    lines = [{"question_id": i, "category": "c", "turns": [f"w{5 + i} w9", "w7"]} for i in range(3)]
    questions.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = tree_sweep.main(
        [
            "--base-model-path", str(tmp_path / "target"), "--ea-model-path", str(tmp_path / "head"),
            "--bench-name", str(questions), "--questions", "2", "--max-new-token", "6",
            "--total-token", "4,6", "--depth", "2", "--top-k", "2", "--dtype", "float32",
            "--lookup-tokens", "0,3", "--lookup-min-ngram", "1",
        ]
    )  # fmt: skip
    labels = [r.label for r in rows]
    assert labels == [
        "plain (first)",
        "lookup alone, lookup_tokens=3",
        "total_token=4 depth=2 top_k=2",
        "total_token=4 depth=2 top_k=2 lookup_tokens=3",
        "total_token=6 depth=2 top_k=2",
        "total_token=6 depth=2 top_k=2 lookup_tokens=3",
        "plain (last)",
    ]
    assert all(r.tokens == 12 for r in rows)  # 2 questions x 6 tokens (no EOS in a tiny model)
    assert rows[0].tau == 1.0 and all(r.tau >= 1.0 for r in rows)
    assert "speedup" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--depth", "0"), ("--top-k", "a,b"), ("--lookup-tokens", "-1"), ("--lookup-min-ngram", "0")],
)
def test_bad_grid_values_name_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit):
        tree_sweep.main([flag, value])
    assert flag in capsys.readouterr().err


def test_step_profile_times_eagle_with_the_lookup_beside_eagle(tmp_path, capsys, one_thread):
    from eagle.evaluation import profile_steps

    model = make_model("llama")
    model.save_pretrained(tmp_path / "target")
    _save_tokenizer(tmp_path / "target")
    save_head(random_head(TargetModel(model), "eagle3"), tmp_path / "head")
    profile_steps.main(
        [
            "--base-model-path", str(tmp_path / "target"), "--ea-model-path", str(tmp_path / "head"),
            "--dtype", "float32", "--total-token", "4", "--depth", "2", "--top-k", "2",
            "--prompt-tokens", "12", "--new-tokens", "8", "--repeats", "2", "--lookup",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "naivegenerate:" in out and "eagenerate:" in out
    assert "eagenerate + lookup" in out and "x plain EAGLE's" in out
    assert "us per step" in out


def test_spread_takes_one_question_per_category_of_mt_bench():
    from eagle.benchmarks import load_questions

    questions = tree_sweep.spread(load_questions("mt_bench"), 8)
    assert len({q.category for q in questions}) == 8
    assert tree_sweep.spread([1, 2, 3], 5) == [1, 2, 3]
    assert tree_sweep.spread(list(range(10)), 3) == [0, 3, 6]
