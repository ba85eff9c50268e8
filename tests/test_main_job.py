"""The main job (``python -m eagle``) end to end on a tiny model, and the shipped-head lookup."""

from __future__ import annotations

import pytest
from helpers import make_model, random_head
from test_ea_model import _save_tokenizer

from eagle.__main__ import main
from eagle.model import shipped
from eagle.model.checkpoint import save_head
from eagle.model.target import TargetModel


def test_main_job_prints_answer_speeds_and_tau(tmp_path, capsys):
    model = make_model("llama")
    model.save_pretrained(tmp_path / "target")
    _save_tokenizer(tmp_path / "target")
    save_head(random_head(TargetModel(model), "eagle3"), tmp_path / "head")
    (tmp_path / "head" / "tree.json").write_text('{"total_token": 6, "depth": 2, "top_k": 2}')
    main(
        [
            "--base-model-path", str(tmp_path / "target"), "--ea-model-path", str(tmp_path / "head"),
            "--prompt", "w5 w6", "--max-new-tokens", "12", "--dtype", "float32",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    for label in ("plain decoding", "EAGLE", "speedup", "tau", "identical"):
        assert label in captured.out
    assert "total_token=6, depth=2, top_k=2" in captured.err


def test_no_shipped_head_for_other_targets():
    with pytest.raises(ValueError, match="ea-model-path"):
        shipped.head_for("meta-llama/Llama-3.1-8B")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),  # was UnboundLocalError
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        (["--max-new-tokens", "-5"], "--max-new-tokens"),
        (["--max-new-tokens", "1e3"], "argument --max-new-tokens: invalid int value"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0, got nan"),
        (["--temperature", "inf"], "--temperature must be a finite number >= 0, got inf"),
        (["--temperature", "-0.5"], "--temperature must be >= 0, got -0.5"),
        (["--temperature", "warm"], "argument --temperature: invalid float value"),
        (["--total-token", "0"], "--total-token must be -1 or >= 1, got 0"),
        (["--depth", "0"], "--depth must be >= 1"),
        (["--top-k", "-3"], "--top-k must be >= 1"),
        (["--top-k", "9000"], "--top-k 9000 (or the head's tree.json) exceeds the draft vocab"),
        (["--device", "tpu"], "--device must be one of cpu, cuda, cuda:N, auto, got 'tpu'"),
        (["--device", "meta"], "--device must be one of cpu, cuda, cuda:N"),
        (["--dtype", "int8"], "argument --dtype: invalid choice"),
        (["--base-model-path", "meta-llama/Llama-3.1-8B"], "--ea-model-path"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag_before_loading(argv, named, capsys, monkeypatch):
    import eagle.__main__ as job

    def never(args):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(job, "load", never)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_top_k_is_checked_against_a_local_heads_vocabulary(tmp_path, capsys):
    model = make_model("llama")
    save_head(random_head(TargetModel(model), "eagle1"), tmp_path / "head")
    with pytest.raises(SystemExit):
        main(["--base-model-path", str(tmp_path), "--ea-model-path", str(tmp_path / "head"),
              "--top-k", "97"])  # fmt: skip
    err = capsys.readouterr().err
    assert "--top-k 97" in err and "draft vocabulary" in err and "1..96" in err
