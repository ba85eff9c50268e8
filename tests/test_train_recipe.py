"""The one-command recipe of the shipped head: its stage commands and the bf16 export."""

import json
from dataclasses import asdict

import pytest
import torch
from helpers import make_target, random_head
from safetensors.torch import load_file

from eagle.model.checkpoint import load_head, save_head
from eagle.model.draft_head import TargetParts
from eagle.train import recipe


def test_export_casts_weights_to_bf16_and_loads_strictly(tmp_path):
    target = make_target("llama")
    head = random_head(target, "eagle3", draft_vocab=48)
    trained = save_head(head, tmp_path / "trained")
    out = recipe.export_head(
        trained, tmp_path / "shipped", {"total_token": 8, "depth": 3, "top_k": 2}
    )
    state = load_file(out / "model.safetensors")
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.bfloat16 for v in floats)
    assert state["d2t"].dtype == torch.int64 and state["t2d"].dtype == torch.bool
    assert json.loads((out / "tree.json").read_text()) == {"total_token": 8, "depth": 3, "top_k": 2}
    parts = TargetParts(target.embed_tokens, target.lm_head)
    loaded = load_head(out, parts, dtype=torch.float32)
    for name, value in head.state_dict().items():
        if name.endswith("inv_freq"):
            continue
        expected = value.to(torch.bfloat16).to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[name], expected), name


def test_print_commands_shows_every_stage_flag_of_every_round(tmp_path, capsys):
    assert recipe.main(["--workdir", str(tmp_path), "--output", "o", "--print-commands"]) is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 * len(recipe.ROUNDS)
    for number, (data, train) in enumerate(zip(lines[::2], lines[1::2], strict=True), start=1):
        spec = recipe.ROUNDS[number - 1]
        assert data.startswith("python -m eagle.ge_data ") and "--regenerate" in data
        assert "--exclude-mt-bench" in data and "--exclude-humaneval" in data
        assert f"--limit {spec.limit} " in data
        assert train.startswith("python -m eagle.train.main ") and "smollm2_eagle3.json" in train
        assert f"--cpdir {tmp_path}/ckpt-r{number} " in train and "--resume" not in train
        if spec.fine_tune:  # starts from the previous round's head
            assert train.endswith(f"--init-head {tmp_path}/ckpt-r{number - 1}/head")
        else:
            assert "--init-head" not in train


def test_later_rounds_extend_the_data_and_fine_tune():
    limits = [spec.limit for spec in recipe.ROUNDS]
    assert limits == sorted(limits) and not recipe.ROUNDS[0].fine_tune
    assert all(spec.fine_tune for spec in recipe.ROUNDS[1:])


def test_a_finished_round_is_recognised_only_with_its_own_settings(tmp_path):
    spec = recipe.ROUNDS[0]
    assert not recipe.round_done(tmp_path, 1, spec)
    recipe.round_dir(tmp_path, 1).mkdir()
    (recipe.round_dir(tmp_path, 1) / recipe.ROUND_FILE).write_text(json.dumps(asdict(spec)))
    assert recipe.round_done(tmp_path, 1, spec)
    assert not recipe.round_done(tmp_path, 1, recipe.Round(limit=spec.limit + 1))


def test_rounds_flag_is_checked(tmp_path):
    with pytest.raises(SystemExit):
        recipe.main(["--workdir", str(tmp_path), "--output", "o", "--rounds", "0"])
