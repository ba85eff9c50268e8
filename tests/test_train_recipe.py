"""The one-command recipe of the shipped head: its stage commands and the bf16 export."""

import json

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


def test_print_commands_shows_every_stage_flag(tmp_path, capsys):
    assert recipe.main(["--workdir", str(tmp_path), "--output", "o", "--print-commands"]) is None
    data, train = capsys.readouterr().out.strip().splitlines()
    assert data.startswith("python -m eagle.ge_data ") and "--regenerate" in data
    assert "--exclude-mt-bench" in data and "--exclude-humaneval" in data
    assert train.startswith("python -m eagle.train.main ") and "smollm2_eagle3.json" in train
    assert "--resume" not in train
