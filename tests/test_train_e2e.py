"""End to end on a tiny random target: train, export, load with EaModel, decode losslessly.

The data are the target's own greedy continuations of random prompts, so a head that learned
them drafts well on them: the trained head's mean acceptance length must be clearly above an
untrained head's (about 1), while the output stays exactly the target's greedy output. A head
trained with a shifted alignment would not get there.

The multi-process and DeepSpeed runs are marked slow (``pytest -m slow``): DeepSpeed's first
start on a machine compiles its CPU extensions (about 80 s); later starts take seconds.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    greedy_samples,
    greedy_sequences,
    make_target,
    random_head,
    save_target_dir,
    write_feature_data,
)
from safetensors.torch import load_file

from eagle.ge_data.feature_format import read_manifest, read_vocab
from eagle.model.draft import DynamicTree
from eagle.model.ea_model import EaModel
from eagle.train.main import main

ROOT = Path(__file__).parent.parent
TREE = dict(total_token=12, depth=4, top_k=3)
NEW_TOKENS = 32


@functools.cache
def _target():
    return make_target("llama")


@functools.cache
def _samples():
    return greedy_samples(_target(), 24, prompt_len=6, new_tokens=40, seed=0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-e2e")
    save_target_dir(_target().model, root / "target")
    write_feature_data(_target(), root / "data", _samples(), draft_vocab_size=64)
    return root


def _config(root: Path, name: str, variant: str, **train) -> Path:
    settings = {"lr": 3e-3, "batch_size": 4, "schedule": "constant", "val_fraction": 0.1, **train}
    head = {"save_embedding": True} if variant == "eagle1" else {}
    path = root / f"{name}.json"
    path.write_text(json.dumps({"variant": variant, "head": head, "train": settings}))
    return path


def _args(root: Path, config: Path, cpdir: str, *extra: str) -> list[str]:
    return [
        "--basepath", str(root / "target"), "--tmpdir", str(root / "data"),
        "--cpdir", str(root / cpdir), "--configpath", str(config), *extra,
    ]  # fmt: skip


def _tau(model: EaModel) -> float:
    """Mean acceptance length over the data's prompts; asserts greedy equality on the way."""
    model.eos_ids = set()
    new_tokens = steps = 0
    for ids, _ in _samples()[:12]:
        prompt = ids[None, :6]
        out, new, idx = model.eagenerate(prompt, max_new_tokens=NEW_TOKENS, log=True)
        assert torch.equal(out, greedy_sequences(_target(), prompt, NEW_TOKENS))
        new_tokens, steps = new_tokens + new, steps + idx + 1
    return new_tokens / steps


def _untrained_tau(variant: str) -> float:
    head = random_head(_target(), variant, draft_vocab=64 if variant == "eagle3" else None)
    return _tau(EaModel(_target(), head, None, DynamicTree(**TREE), eos_ids=set()))


def _trained_tau(root: Path, head_dir: Path) -> float:
    model = EaModel.from_pretrained(
        str(root / "target"), str(head_dir), **TREE, dtype=torch.float32
    )
    return _tau(model)


def _metrics(cpdir: Path) -> list[dict]:
    return [json.loads(line) for line in (cpdir / "metrics.jsonl").read_text().splitlines()]


def test_eagle1_head_trains_exports_and_speeds_up_lossless_decoding(workspace):
    head_dir = main(_args(workspace, _config(workspace, "e1", "eagle1", epochs=40), "ckpt-e1"))
    assert head_dir == workspace / "ckpt-e1" / "head"
    state = load_file(head_dir / "model.safetensors")
    assert "embed_tokens.weight" in state and "layers.0.self_attn.q_proj.weight" in state
    assert torch.equal(state["embed_tokens.weight"], _target().embed_tokens.weight)
    epochs = _metrics(workspace / "ckpt-e1")
    assert len(epochs) == 40 and epochs[-1]["val"]["accuracy"][0] > epochs[0]["val"]["accuracy"][0]
    trained, untrained = _trained_tau(workspace, head_dir), _untrained_tau("eagle1")
    print(f"mean acceptance length: trained {trained:.2f}, untrained {untrained:.2f}")
    assert untrained < 1.2 and trained > 1.5, (trained, untrained)


def test_eagle3_head_trains_exports_and_speeds_up_lossless_decoding(workspace):
    config = _config(workspace, "e3", "eagle3", epochs=60, unroll_steps=4)
    head_dir = main(_args(workspace, config, "ckpt-e3"))
    written = json.loads((head_dir / "config.json").read_text())
    assert written["architectures"] == ["LlamaForCausalLMEagle3"]
    assert written["draft_vocab_size"] == 64
    state = load_file(head_dir / "model.safetensors")
    vocab = read_vocab(read_manifest(workspace / "data"))
    assert torch.equal(state["d2t"], vocab.d2t) and torch.equal(state["t2d"], vocab.t2d)
    assert "embed_tokens.weight" not in state
    assert len(_metrics(workspace / "ckpt-e3")[-1]["val"]["accuracy"]) == 4
    trained, untrained = _trained_tau(workspace, head_dir), _untrained_tau("eagle3")
    print(f"mean acceptance length: trained {trained:.2f}, untrained {untrained:.2f}")
    assert untrained < 1.2 and trained > 1.5, (trained, untrained)


def test_resumed_run_continues_exactly(workspace):
    config = _config(workspace, "resume", "eagle1", epochs=2, noise=0.2)
    straight = main(_args(workspace, config, "ckpt-straight"))
    main(_args(workspace, config, "ckpt-resumed", "--max-steps", "4"))
    states = sorted(p.name for p in (workspace / "ckpt-resumed").glob("state-*"))
    assert states == ["state-00000004"]
    progress = json.loads(
        (workspace / "ckpt-resumed" / states[0] / "trainer_state.json").read_text()
    )
    assert (progress["epoch"], progress["batches_done"], progress["step"]) == (0, 4, 4)
    resumed = main(_args(workspace, config, "ckpt-resumed", "--resume"))
    expected = load_file(straight / "model.safetensors")
    got = load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), key


def _launch(workspace: Path, launcher: list[str], extra: list[str], cpdir: str, variant: str):
    config = _config(workspace, f"launch-{cpdir}", variant, epochs=2, unroll_steps=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [*launcher, "-m", "eagle.train.main", *_args(workspace, config, cpdir), *extra]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    head_dir = workspace / cpdir / "head"
    model = EaModel.from_pretrained(
        str(workspace / "target"), str(head_dir), **TREE, dtype=torch.float32
    )
    _tau(model)  # loads and decodes losslessly
    return done.stdout + done.stderr


def _accelerate(processes: int, *options: str) -> list[str]:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    return [
        accelerate, "launch", "--num_processes", str(processes), "--num_machines", "1",
        "--dynamo_backend", "no", "--mixed_precision", "bf16", *options,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_process_accelerate_launch_on_cpu(workspace):
    output = _launch(workspace, _accelerate(2, "--multi_gpu"), [], "ckpt-ddp", "eagle1")
    assert "2 process(es) (MULTI_CPU, mixed precision bf16)" in output


@pytest.mark.slow
def test_deepspeed_two_processes_through_accelerate(workspace):
    ds_config = str(ROOT / "eagle" / "train" / "configs" / "ds_config.json")
    launcher = _accelerate(2, "--use_deepspeed", "--deepspeed_config_file", ds_config)
    output = _launch(workspace, launcher, [], "ckpt-ds2", "eagle3")
    assert "2 process(es) (DEEPSPEED, mixed precision bf16)" in output


@pytest.mark.slow
def test_deepspeed_flag_single_process_without_resumable_states(workspace):
    """DeepSpeed's own states are pickle files: none are written, and --resume is refused."""
    ds_config = str(ROOT / "eagle" / "train" / "configs" / "ds_config.json")
    plain = [sys.executable]
    extra = ["--deepspeed", ds_config, "--mixed-precision", "bf16"]
    output = _launch(workspace, plain, [*extra, "--max-steps", "3"], "ckpt-ds1", "eagle1")
    assert "1 process(es) (DEEPSPEED, mixed precision bf16)" in output
    assert "no resumable training states are written" in output
    assert not list((workspace / "ckpt-ds1").glob("state-*"))
    config = _config(workspace, "launch-ckpt-ds1", "eagle1", epochs=2, unroll_steps=2)
    command = [*plain, "-m", "eagle.train.main", *_args(workspace, config, "ckpt-ds1"), *extra]
    done = subprocess.run(
        [*command, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1 and "--resume is not available under DEEPSPEED" in done.stderr
