"""Training states on disk: never unpickled, never mixed between runs, resumable after a crash.

Each test trains a tiny head on a tiny random target (as in ``test_train_e2e``) and then looks
at what is on disk: a payload planted in a state folder must not run, a fresh run must not
destroy or mix with an earlier run's outputs, an interrupted save must leave a state that
resuming skips (and says so), and a diverging run must stop without writing non-finite weights.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from helpers import greedy_samples, make_target, save_target_dir, write_feature_data
from safetensors.torch import load_file

from eagle.train import state as state_module
from eagle.train.main import build_trainer, main, make_accelerator, parse_args, resolve_config
from eagle.train.state import (
    COMPLETE_FILE,
    CheckpointError,
    Processes,
    StateParts,
    choose_state,
    is_complete,
    prune_states,
    read_state,
    run_id_of,
    state_dirs,
    write_state,
)
from eagle.train.trainer import NonFiniteError, check_resumable

ROOT = Path(__file__).parent.parent
# what accelerate's save_state wrote (and load_state unpickled), plus other pickle names
PICKLE_NAMES = (
    "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl",
    "optimizer.bin", "pytorch_model.bin", "scheduler.bin", "scaler.pt", "sampler.bin",
    "dl_state_dict.bin",
)  # fmt: skip


class Payload:
    """Unpickling this writes ``marker``: the proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


@functools.cache
def _target():
    return make_target("llama")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-state")
    save_target_dir(_target().model, root / "target")
    samples = greedy_samples(_target(), 18, prompt_len=6, new_tokens=20, seed=0)
    write_feature_data(_target(), root / "data", samples, draft_vocab_size=64)
    return root


def _flags(root: Path, cpdir: Path, *extra: str, **train) -> list[str]:
    settings = {"lr": 3e-3, "batch_size": 4, "schedule": "constant", "val_fraction": 0.1, **train}
    config = cpdir.parent / f"{cpdir.name}.json"
    config.write_text(json.dumps({"variant": "eagle1", "train": settings}))
    return [
        "--basepath", str(root / "target"), "--tmpdir", str(root / "data"),
        "--cpdir", str(cpdir), "--configpath", str(config), *extra,
    ]  # fmt: skip


def _train(root: Path, cpdir: Path, *extra: str, **train) -> Path | None:
    return main(_flags(root, cpdir, *extra, **train))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _heads_equal(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def base_state(workspace) -> Path:
    """A cpdir with one complete state (step 2) to copy from."""
    cpdir = workspace / "ckpt-base"
    _train(workspace, cpdir, "--max-steps", "2")
    return cpdir


def _copy(cpdir: Path, to: Path) -> Path:
    shutil.copytree(cpdir, to)
    return to


# -- item 1: nothing in a checkpoint folder is unpickled ------------------------------------------


def test_state_layout_is_safetensors_and_json_only(base_state):
    (state,) = state_dirs(base_state)
    names = sorted(p.name for p in state.iterdir())
    assert names == [
        COMPLETE_FILE, "model.safetensors", "optimizer.safetensors", "rng-0.json",
        "trainer_state.json",
    ]  # fmt: skip
    record = json.loads((state / "trainer_state.json").read_text())
    assert (record["epoch"], record["batches_done"], record["step"]) == (0, 2, 2)
    assert record["scheduler"]["last_epoch"] == 2 and record["num_processes"] == 1
    assert json.loads((state / COMPLETE_FILE).read_text())["files"] == names[1:]


def test_resume_does_not_run_a_payload_planted_in_the_state(workspace, base_state, monkeypatch):
    marker = workspace / "payload-ran"
    control = workspace / "control.bin"  # the payload is real: unpickling it runs it
    torch.save(Payload(marker), control)
    torch.load(control, weights_only=False)
    assert marker.exists()
    marker.unlink()

    cpdir = _copy(base_state, workspace / "ckpt-planted")
    (state,) = state_dirs(cpdir)
    for name in PICKLE_NAMES:
        torch.save(Payload(marker), state / name)
    loaded = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loaded.append(f) or real_load(f, *a, **k))
    head = _train(workspace, cpdir, "--resume")
    assert not marker.exists(), "a pickle in the checkpoint folder was loaded"
    assert not [f for f in loaded if str(cpdir) in str(f)]
    assert head == cpdir / "head" and (head / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "replaced", ["model.safetensors", "optimizer.safetensors", "trainer_state.json", "rng-0.json"]
)
def test_a_state_file_replaced_by_a_pickle_is_an_error_naming_it(workspace, base_state, replaced):
    marker = workspace / f"payload-{replaced}"
    cpdir = _copy(base_state, workspace / f"ckpt-replaced-{replaced}")
    (state,) = state_dirs(cpdir)
    torch.save(Payload(marker), state / replaced)
    with pytest.raises(CheckpointError, match=replaced.replace(".", r"\.")):
        _train(workspace, cpdir, "--resume")
    assert not marker.exists()


def test_an_old_pickle_state_is_refused_not_loaded(workspace):
    marker = workspace / "payload-old"
    cpdir = workspace / "ckpt-old-format"
    old = cpdir / "state-00000004"
    old.mkdir(parents=True)
    for name in PICKLE_NAMES:
        torch.save(Payload(marker), old / name)
    (old / "trainer_state.json").write_text(json.dumps({"epoch": 0, "batches_done": 4, "step": 4}))
    with pytest.raises(FileNotFoundError, match="no complete training state in --cpdir"):
        _train(workspace, cpdir, "--resume")
    with pytest.raises(CheckpointError, match=r"state-00000004: not a complete training state"):
        _train(workspace, cpdir, "--resume", str(old))
    assert not marker.exists()


@pytest.mark.parametrize("backend", [DistributedType.DEEPSPEED, DistributedType.FSDP])
def test_resume_is_refused_on_backends_whose_states_are_pickle(backend):
    with pytest.raises(CheckpointError, match=f"--resume is not available under {backend.value}"):
        check_resumable(SimpleNamespace(distributed_type=backend))


@pytest.mark.slow  # starting DeepSpeed takes minutes on a small machine
def test_deepspeed_resume_is_refused_before_anything_is_loaded(tmp_path):
    pytest.importorskip("deepspeed")
    ds_config = ROOT / "eagle" / "train" / "configs" / "ds_config.json"
    cpdir = tmp_path / "ckpt"
    flags = _flags(tmp_path, cpdir, "--deepspeed", str(ds_config), "--resume")
    done = subprocess.run(
        [sys.executable, "-m", "eagle.train.main", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "--resume is not available under DEEPSPEED" in done.stderr
    assert "pickle" in done.stderr and not cpdir.exists()


# -- item 2: a fresh run never deletes or mixes with an earlier run -------------------------------


def test_a_fresh_run_refuses_a_used_cpdir_and_overwrite_replaces_it(workspace):
    cpdir = workspace / "ckpt-used"
    _train(workspace, cpdir, epochs=2)
    before = _snapshot(cpdir)
    old_run = {run_id_of(p) for p in state_dirs(cpdir)}
    assert len(old_run) == 1 and len(state_dirs(cpdir)) == 2

    with pytest.raises(FileExistsError, match=r"--cpdir .*ckpt-used is not empty.*--overwrite"):
        _train(workspace, cpdir, epochs=1)
    assert _snapshot(cpdir) == before, "the refused run changed the folder"

    (cpdir / "notes.txt").write_text("mine")
    head = _train(workspace, cpdir, "--overwrite", epochs=1)
    states = state_dirs(cpdir)
    assert len(states) == 1 and is_complete(states[0])  # the new run's end of epoch 1
    assert run_id_of(states[0]) not in old_run
    metrics = (cpdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1]
    assert head == cpdir / "head" and (cpdir / "notes.txt").read_text() == "mine"
    assert choose_state(cpdir, None) == (states[0], [])


def test_overwrite_and_resume_together_are_refused(workspace, capsys):
    with pytest.raises(SystemExit):
        parse_args(_flags(workspace, workspace / "x", "--overwrite", "--resume"))
    assert "--overwrite and --resume" in capsys.readouterr().err


def test_a_run_prunes_only_its_own_states(tmp_path):
    def make(step: int, run: str | None, complete: bool = True) -> None:
        path = tmp_path / f"state-{step:08d}"
        path.mkdir()
        if run is not None:
            (path / "trainer_state.json").write_text(json.dumps({"run_id": run}))
        if complete:
            (path / COMPLETE_FILE).write_text("{}")

    make(1, "ours"), make(2, "theirs"), make(3, "ours"), make(4, None), make(5, "ours", False)
    make(6, "ours"), make(7, "ours")
    shutil.copytree(tmp_path / "state-00000007", tmp_path / "state-00000008.partial")
    shutil.copytree(tmp_path / "state-00000002", tmp_path / "state-00000009.partial")
    gone = prune_states(tmp_path, "ours", keep=2)
    assert sorted(p.name for p in gone) == [
        "state-00000001", "state-00000003", "state-00000005", "state-00000008.partial",
    ]  # fmt: skip
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"state-0000000{s}" for s in (2, 4, 6, 7)] + ["state-00000009.partial"]


# -- item 3: a save interrupted by a crash --------------------------------------------------------


def test_resume_after_a_crash_mid_save_takes_the_newest_complete_state(
    workspace, monkeypatch, capsys
):
    # 4 optimizer steps per epoch: states at steps 3, 4 (end of epoch 1), 6 and 8 (the end)
    settings = {"epochs": 2, "save_every": 3, "keep_checkpoints": 5, "noise": 0.2}
    straight = _train(workspace, workspace / "ckpt-straight", **settings)
    assert [p.name for p in state_dirs(workspace / "ckpt-straight")][-1] == "state-00000008"

    cpdir = workspace / "ckpt-crash"
    calls, real_save = [], state_module.save_file

    def crash_on_fourth_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the optimizer file of state-00000008
            raise OSError("disk full (simulated)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(state_module, "save_file", crash_on_fourth_save)
    with pytest.raises(OSError, match="simulated"):
        _train(workspace, cpdir, **settings)
    monkeypatch.undo()
    assert [p.name for p in state_dirs(cpdir)] == [f"state-0000000{s}" for s in (3, 4, 6)]
    assert all(is_complete(p) for p in state_dirs(cpdir))
    staging = cpdir / "state-00000008.partial"
    assert (staging / "model.safetensors").exists() and not is_complete(staging)
    assert len((cpdir / "metrics.jsonl").read_text().splitlines()) == 2  # epoch 2 was reported

    with pytest.raises(CheckpointError, match=r"state-00000008.partial: not a complete training"):
        _train(workspace, cpdir, "--resume", str(staging))
    capsys.readouterr()
    resumed = _train(workspace, cpdir, "--resume", **settings)
    out = capsys.readouterr().out
    assert "state-00000008.partial is an interrupted save" in out
    assert f"resumed from {cpdir / 'state-00000006'}: epoch 2, step 6" in out
    assert "dropped 1 line(s)" in out
    assert not staging.exists() and is_complete(cpdir / "state-00000008")
    metrics = [json.loads(line) for line in (cpdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert _heads_equal(straight, resumed)


def _tiny_parts(seed: int) -> StateParts:
    torch.manual_seed(seed)
    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1, betas=(0.8, 0.9))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return StateParts(module, optimizer, scheduler)


def test_a_state_round_trips_and_an_interrupted_resave_keeps_the_earlier_one(tmp_path, monkeypatch):
    one = Processes(0, 1, lambda: None, torch.device("cpu"))
    path = tmp_path / "state-00000001"
    saved = _tiny_parts(0)
    write_state(path, saved, one, {"run_id": "r", "step": 1})
    draws = torch.rand(3)  # after the save: the restored RNG draws the same numbers

    restored = _tiny_parts(1)
    record = read_state(path, restored, one)
    assert record["run_id"] == "r" and torch.equal(torch.rand(3), draws)
    assert torch.equal(restored.module.weight, saved.module.weight)
    assert restored.scheduler.state_dict() == saved.scheduler.state_dict()
    a, b = saved.optimizer.state_dict(), restored.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"] and b["param_groups"][0]["betas"] == (0.8, 0.9)
    for index, values in a["state"].items():
        assert all(torch.equal(v, b["state"][index][k]) for k, v in values.items())

    before = _snapshot(path)
    monkeypatch.setattr(state_module, "save_file", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_state(path, _tiny_parts(2), one, {"run_id": "r", "step": 1})
    assert _snapshot(path) == before  # the complete state is untouched
    chosen, notes = choose_state(tmp_path, None)
    assert chosen == path and len(notes) == 1 and "state-00000001.partial" in notes[0]


@pytest.mark.slow  # two processes (DDP over gloo): one RNG file each, exact continuation
def test_two_process_resume_continues_exactly(workspace):
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [
        accelerate, "launch", "--num_processes", "2", "--num_machines", "1", "--multi_gpu",
        "--dynamo_backend", "no", "--mixed_precision", "no", "-m", "eagle.train.main",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(cpdir: Path, *extra: str) -> None:
        flags = _flags(workspace, cpdir, *extra, batch_size=2, epochs=2, noise=0.2)
        done = subprocess.run(
            [*launch, *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    run(workspace / "ddp-straight")
    run(workspace / "ddp-resumed", "--max-steps", "3")
    (state,) = state_dirs(workspace / "ddp-resumed")
    assert {"rng-0.json", "rng-1.json"} <= {p.name for p in state.iterdir()}
    run(workspace / "ddp-resumed", "--resume")
    assert _heads_equal(workspace / "ddp-straight" / "head", workspace / "ddp-resumed" / "head")


# -- item 11: divergence stops the run; non-finite weights are never written ---------------------


def test_a_diverging_run_stops_with_an_error_and_exports_nothing(workspace):
    cpdir = workspace / "ckpt-diverge"
    with pytest.raises(NonFiniteError, match=r"loss is not finite .* train\.lr \(--lr, now 1e\+30"):
        _train(workspace, cpdir, lr=1e30, epochs=3, save_every=1)
    assert not (cpdir / "head").exists()
    for path in state_dirs(cpdir):  # states from before the divergence only
        assert all(torch.isfinite(v).all() for v in load_file(path / "model.safetensors").values())


def test_non_finite_weights_are_neither_saved_nor_exported(workspace):
    cpdir = workspace / "ckpt-nan-weights"
    args = parse_args(_flags(workspace, cpdir))
    config = resolve_config(args)
    trainer = build_trainer(args, config, make_accelerator(args, config))
    head = trainer.accelerator.unwrap_model(trainer.model).head
    with torch.no_grad():
        head.fc.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"fc\.weight.*not saving a training state"):
        trainer.save_checkpoint()
    with pytest.raises(NonFiniteError, match=r"fc\.weight.*not exporting the head"):
        trainer.export_head()
    assert not cpdir.exists() or not any(cpdir.iterdir())
