"""``--init-head``: training starts from a trained head's weights and draft vocabulary."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import (
    greedy_samples,
    head_config,
    make_target,
    random_head,
    save_target_dir,
    write_feature_data,
)
from safetensors.torch import load_file

from eagle.ge_data.feature_format import read_manifest, read_vocab
from eagle.model.checkpoint import load_head, save_head
from eagle.model.draft_head import TargetParts, build_head
from eagle.train.build import init_from_head
from eagle.train.main import main


def _parts(target) -> TargetParts:
    return TargetParts(target.embed_tokens, target.lm_head)


def test_weights_and_draft_vocabulary_come_from_the_head(tmp_path):
    target = make_target("llama")
    trained = random_head(target, "eagle3", seed=1, draft_vocab=64)
    save_head(trained, tmp_path / "head")
    fresh = random_head(target, "eagle3", seed=2, draft_vocab=64)
    assert not torch.equal(fresh.d2t, trained.d2t)
    notes = init_from_head(fresh, str(tmp_path / "head"), _parts(target))
    assert len(notes) == 1 and "draft vocabulary" in notes[0]
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_head_of_another_shape_is_refused_naming_the_field(tmp_path):
    target = make_target("llama")
    save_head(random_head(target, "eagle3", draft_vocab=64), tmp_path / "head")
    other = build_head(head_config("eagle3", 64, intermediate_size=32), _parts(target), False)
    with pytest.raises(ValueError, match="intermediate_size: config 32 vs head 64"):
        init_from_head(other, str(tmp_path / "head"), _parts(target))


def test_eagle1_head_is_refused_for_an_eagle3_config(tmp_path):
    target = make_target("llama")
    save_head(random_head(target, "eagle1"), tmp_path / "head")
    fresh = random_head(target, "eagle3", draft_vocab=64)
    with pytest.raises(ValueError, match="EAGLE1"):
        init_from_head(fresh, str(tmp_path / "head"), _parts(target))


def _train(tmp_path, cpdir: str, *extra: str):
    config = tmp_path / "config.json"
    train = {"lr": 1e-9, "batch_size": 4, "schedule": "constant", "val_fraction": 0.25}
    config.write_text(json.dumps({"variant": "eagle3", "head": {}, "train": train}))
    return main([
        "--basepath", str(tmp_path / "target"), "--tmpdir", str(tmp_path / "data"),
        "--cpdir", str(tmp_path / cpdir), "--configpath", str(config), "--max-steps", "1", *extra,
    ])  # fmt: skip


def test_training_flag_starts_from_the_head(tmp_path):
    target = make_target("llama")
    save_target_dir(target.model, tmp_path / "target")
    samples = greedy_samples(target, 8, prompt_len=6, new_tokens=20, seed=0)
    write_feature_data(target, tmp_path / "data", samples, draft_vocab_size=64)
    # a head of this config, with random weights and a draft vocabulary unlike the data's
    start = load_head(_train(tmp_path, "ckpt0"), _parts(target), dtype=torch.float32)
    other = random_head(target, "eagle3", seed=5, draft_vocab=64)
    start.load_state_dict({**other.state_dict(), "fc.weight": start.fc.weight})
    save_head(start, tmp_path / "start")
    head_dir = _train(tmp_path, "ckpt1", "--init-head", str(tmp_path / "start"))
    got = load_file(head_dir / "model.safetensors")
    data_d2t = read_vocab(read_manifest(tmp_path / "data")).d2t
    assert torch.equal(got["d2t"], other.d2t) and not torch.equal(got["d2t"], data_d2t)
    for key, value in start.state_dict().items():
        torch.testing.assert_close(got[key].float(), value.float(), atol=1e-6, rtol=0)
