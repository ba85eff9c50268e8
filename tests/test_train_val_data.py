"""A fixed validation set (``--val-data``): the trainer evaluates every sample of it, trains on
all of ``--tmpdir``, and reports what ``eagle.train.validate`` measures on the exported head."""

from __future__ import annotations

import json

import torch
from helpers import greedy_samples, make_target, save_target_dir, write_feature_data

from eagle.model.checkpoint import load_head
from eagle.train.build import CastInput, target_parts
from eagle.train.main import main
from eagle.train.validate import teacher_forced, validate_head


def test_val_data_is_evaluated_whole_and_matches_validate(tmp_path):
    target = make_target("llama")
    samples = greedy_samples(target, 14, prompt_len=4, new_tokens=16, seed=1)
    save_target_dir(target.model, tmp_path / "target")
    write_feature_data(target, tmp_path / "train", samples[:10], draft_vocab_size=48)
    write_feature_data(target, tmp_path / "val", samples[10:], draft_vocab_size=48)
    config = tmp_path / "c.json"
    settings = {"lr": 3e-3, "batch_size": 4, "schedule": "constant", "unroll_steps": 3}
    config.write_text(json.dumps({"variant": "eagle3", "train": settings}))
    argv = [
        "--basepath", str(tmp_path / "target"), "--tmpdir", str(tmp_path / "train"),
        "--cpdir", str(tmp_path / "ckpt"), "--configpath", str(config),
        "--val-data", str(tmp_path / "val"), "--epochs", "2",
    ]  # fmt: skip
    head_dir = main(argv)
    records = [
        json.loads(x) for x in (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()
    ]
    val_tokens = sum(len(ids) for ids, _ in samples[10:])
    assert [r["val"]["tokens"] for r in records] == [val_tokens, val_tokens]
    assert records[-1]["train"]["tokens"] == sum(len(ids) for ids, _ in samples[:10])
    parts = target_parts(target.embed_tokens, target.lm_head)
    head = load_head(head_dir, parts, dtype=torch.float32)
    measured = teacher_forced(head, CastInput(target.lm_head), tmp_path / "val", steps=3)
    assert measured.top1 == records[-1]["val"]["accuracy"]
    expected = [sum(int(m[2 + s :].sum()) for _, m in samples[10:]) for s in range(3)]
    assert measured.positions == expected
    # the command's path: the target loaded in fp32 from its folder, bf16 stored features
    result = validate_head(
        head_dir, str(tmp_path / "target"), tmp_path / "val", None, steps=3, tree=(4, 2, 2)
    )
    assert result["teacher_forced"]["top1"] == records[-1]["val"]["accuracy"]
