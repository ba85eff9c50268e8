"""The tree-settings sweep end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
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


@pytest.mark.parametrize("prompt", ["random-tokens", "random-words"])
def test_step_profile_times_eagle_with_the_lookup_beside_eagle(
    prompt, tmp_path, capsys, one_thread
):
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
            "--prompt", prompt, "--prompts", "2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "naivegenerate:" in out and "eagenerate:" in out
    assert "eagenerate + lookup" in out and "x plain EAGLE's" in out
    # the discarded lookup drafts EAGLE's own trees, so its tokens and steps are EAGLE's
    assert "drafts discarded (the no-match cost)" in out
    assert "tokens and steps identical to plain EAGLE's" in out
    assert f"{1 if prompt == 'random-tokens' else 2} prompt(s)" in out
    assert "us per step" in out


@pytest.mark.parametrize(
    "argv",
    [["--prompts", "0"], ["--new-tokens", "-1"], ["--prompt", "random-words", "--random-target"]],
)
def test_step_profile_rejects_bad_flags(argv, capsys):
    from eagle.evaluation import profile_steps

    with pytest.raises(SystemExit):
        profile_steps.parse_args(argv)
    assert "--" in capsys.readouterr().err


def test_spread_takes_one_question_per_category_of_mt_bench():
    from eagle.benchmarks import load_questions

    questions = tree_sweep.spread(load_questions("mt_bench"), 8)
    assert len({q.category for q in questions}) == 8
    assert tree_sweep.spread([1, 2, 3], 5) == [1, 2, 3]
    assert tree_sweep.spread(list(range(10)), 3) == [0, 3, 6]


def test_discarded_lookup_matches_like_the_lookup_and_drafts_the_base_tree_alone():
    from eagle.evaluation.profile_steps import DiscardedLookup
    from eagle.model.generate import PlainProposer
    from eagle.model.lookup import ContextProposer, LookupSettings

    settings = LookupSettings(max_tokens=5)
    lookup, discarded = (
        ContextProposer(PlainProposer(), settings),
        DiscardedLookup(PlainProposer(), settings),
    )
    states = lookup.start(), discarded.start()
    for tokens in ([1, 2, 3, 4], [1, 2]):  # "1 2" again: the lookup drafts 3 4 1 2
        with_lookup = lookup.propose(states[0], None, torch.tensor(tokens))
        without = discarded.propose(states[1], None, torch.tensor(tokens))
    assert with_lookup.tokens.tolist() == [2, 3, 4, 1, 2]
    assert without.tokens.tolist() == [2]  # the root alone: PlainProposer's tree
    assert states[1].index.tokens == states[0].index.tokens  # the same work was done
