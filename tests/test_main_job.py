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
