"""Resumable training states (``CPDIR/state-<step>/``), written and read without pickle.

Owns the on-disk layout of a training state, its writing (``write_state``) and reading
(``read_state``), finding the state to resume (``choose_state``), pruning a run's old states
(``prune_states``) and the checks that a folder is safe to train into (``prepare_cpdir``).

Layout of ``state-<step>/`` (format 1):

- ``model.safetensors``: the trained module's weights and buffers;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (AdamW moments, step);
- ``trainer_state.json``: progress (``epoch``, ``batches_done``, ``step``), the run id, the
  number of ``metrics.jsonl`` lines written so far, the process count, the config, the
  optimizer's parameter groups, the LR scheduler's and the gradient scaler's state and
  accelerate's micro-step counter;
- ``rng-<process>.json``: each process's Python, NumPy, torch CPU and device RNG states;
- ``COMPLETE``: written last (after every process has written its files); it lists the files.

The files are written to ``state-<step>.partial/``, which is renamed to ``state-<step>`` once
``COMPLETE`` is in it.

Design choices:
- Nothing in a checkpoint folder is ever unpickled: tensors come from safetensors, everything
  else from JSON, and no file is passed to ``torch.load``. accelerate's ``save_state`` /
  ``load_state`` are not used, because they pickle the optimizer, the RNG states and registered
  objects (``custom_checkpoint_*.pkl``, loaded with ``weights_only=False``). A state that
  cannot be written this way (a scheduler whose state holds objects) is refused when saving.
- A folder without ``COMPLETE`` (or a ``.partial`` one) is an interrupted save, or an old
  pickle-based state: resuming skips it, says so, and takes the newest complete one; naming it
  explicitly is an error.
- Every state records the id of the run that wrote it; a run prunes only its own states.
- Loaded JSON must have exactly the keys the live objects have, so a tampered file can only
  change the values of expected keys, never add attributes the trainer does not expect.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

FORMAT = 1
STATE_PREFIX = "state-"
COMPLETE_FILE = "COMPLETE"
TRAINER_STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_PATTERN = re.compile(rf"^{STATE_PREFIX}(\d+)$")
STAGING_SUFFIX = ".partial"  # a state being written
RETIRED_SUFFIX = ".old"  # a state being replaced by a new save of the same step
LEFTOVER_PATTERN = re.compile(rf"^{STATE_PREFIX}(\d+)(\{STAGING_SUFFIX}|\{RETIRED_SUFFIX})$")
HEAD_DIR = "head"  # the exported head, published format
METRICS_FILE = "metrics.jsonl"  # one line per epoch


class CheckpointError(ValueError):
    """A training state that cannot be written or resumed; the message names the file."""


@dataclass(frozen=True)
class StateParts:
    """What a training state holds, as live objects of this process."""

    module: nn.Module  # the trained module, unwrapped
    optimizer: Any  # torch optimizer (or accelerate's wrapper): state_dict / load_state_dict
    scheduler: Any  # LR scheduler: state_dict / load_state_dict with JSON-representable state
    scaler: Any | None = None  # torch GradScaler (fp16), or None


@dataclass(frozen=True)
class Processes:
    """This process's place in the run and a barrier across all processes."""

    index: int
    count: int
    barrier: Callable[[], None]
    device: torch.device

    @property
    def main(self) -> bool:
        return self.index == 0


# -- finding states -----------------------------------------------------------------------------


def state_name(step: int) -> str:
    return f"{STATE_PREFIX}{step:08d}"


def _step(path: Path) -> int:
    match = STATE_PATTERN.match(path.name) or LEFTOVER_PATTERN.match(path.name)
    return int(match.group(1)) if match else -1


def _folders(cpdir: Path, pattern: re.Pattern[str]) -> list[Path]:
    if not cpdir.is_dir():
        return []
    found = [p for p in cpdir.iterdir() if p.is_dir() and pattern.match(p.name)]
    return sorted(found, key=_step)


def state_dirs(cpdir: Path) -> list[Path]:
    """``state-<step>`` folders in ``cpdir`` (complete or not), oldest step first."""
    return _folders(cpdir, STATE_PATTERN)


def leftover_dirs(cpdir: Path) -> list[Path]:
    """``state-<step>.partial`` / ``.old`` folders that an interrupted save left behind."""
    return _folders(cpdir, LEFTOVER_PATTERN)


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_FILE).is_file()


def choose_state(cpdir: Path, path: Path | None) -> tuple[Path, list[str]]:
    """The state to resume and notes for the log.

    ``path`` given: it must be a complete state. Otherwise the newest complete state in
    ``cpdir``; a newer interrupted save is skipped with a note.
    """
    if path is not None:
        _require_complete(path, "--resume")
        return path, []
    found = state_dirs(cpdir)
    complete = [p for p in found if is_complete(p)]
    interrupted = [p for p in found if not is_complete(p)] + leftover_dirs(cpdir)
    if not complete:
        listed = ", ".join(p.name for p in found + leftover_dirs(cpdir)) or "none"
        raise FileNotFoundError(
            f"--resume: no complete training state in --cpdir {cpdir} (state folders: {listed}; "
            f"a complete one holds {COMPLETE_FILE}); start afresh with --overwrite or a new --cpdir"
        )
    chosen = complete[-1]
    notes = [
        f"{p.name} is an interrupted save (no {COMPLETE_FILE}, or never put in place; or it "
        f"predates the pickle-free format); resuming from the newest complete state, {chosen}"
        for p in sorted(interrupted, key=_step)
        if _step(p) >= _step(chosen)
    ]
    return chosen, notes


def _require_complete(path: Path, flag: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {path}: no such training-state folder")
    if not is_complete(path):
        raise CheckpointError(
            f"{flag} {path}: not a complete training state (no {COMPLETE_FILE}); it was "
            "interrupted while saving, or written by an older version whose pickle files are "
            "never loaded; resume from another state or start afresh"
        )


def run_id_of(path: Path) -> str | None:
    """The id of the run that wrote a state, or None if unreadable."""
    try:
        info = json.loads((path / TRAINER_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    run = info.get("run_id") if isinstance(info, dict) else None
    return run if isinstance(run, str) else None


def prune_states(cpdir: Path, run_id: str, keep: int) -> list[Path]:
    """Delete this run's states but its newest ``keep`` complete ones; returns what went.

    This run's leftovers of interrupted saves go too. States of other runs (and folders whose
    run is unknown) are never touched.
    """
    mine = [p for p in state_dirs(cpdir) + leftover_dirs(cpdir) if run_id_of(p) == run_id]
    complete = [p for p in mine if STATE_PATTERN.match(p.name) and is_complete(p)]
    kept = set(complete[-keep:])
    gone = [p for p in mine if p not in kept]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def used_entries(cpdir: Path) -> list[str]:
    """Names in ``cpdir``: a fresh run needs it empty (or ``--overwrite``)."""
    return sorted(p.name for p in cpdir.iterdir()) if cpdir.is_dir() else []


def prepare_cpdir(cpdir: Path, overwrite: bool) -> list[str]:
    """Check that a fresh run may write into ``cpdir``; with ``overwrite`` clear earlier outputs.

    Returns the names removed. Without ``overwrite`` a non-empty folder is refused: a fresh run
    would mix its head, metrics and states with the earlier run's. Only training outputs
    (``state-<step>`` folders and leftovers, ``head/``, ``metrics.jsonl``) are removed; other
    files stay.
    """
    if cpdir.exists() and not cpdir.is_dir():
        raise FileExistsError(f"--cpdir {cpdir} is a file, not a folder")
    used = used_entries(cpdir)
    if not used:
        return []
    if not overwrite:
        shown = ", ".join(used[:5]) + (", ..." if len(used) > 5 else "")
        raise FileExistsError(
            f"--cpdir {cpdir} is not empty ({shown}); pass --resume to continue the run in it, "
            "--overwrite to replace its training outputs, or choose a new --cpdir"
        )
    removed = []
    for path in [*state_dirs(cpdir), *leftover_dirs(cpdir), cpdir / HEAD_DIR, cpdir / METRICS_FILE]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


# -- writing ------------------------------------------------------------------------------------


def write_state(path: Path, parts: StateParts, procs: Processes, info: dict[str, Any]) -> None:
    """Write a complete training state to ``path`` (every process calls this).

    ``info`` (JSON) holds the trainer's own fields (progress, run id, config). The files go to
    ``<path>.partial``; once all are on disk ``COMPLETE`` is written and the folder is renamed
    into place, so an interrupted save never damages the state it would replace.
    """
    staging = path.with_name(path.name + STAGING_SUFFIX)
    # every process builds the record, so a state that cannot be stored fails on all of them
    optimizer_tensors, optimizer_json = _split_optimizer(parts.optimizer.state_dict())
    record = {
        **info,
        "format": FORMAT,
        "num_processes": procs.count,
        "optimizer": optimizer_json,
        "scheduler": _json_ready(parts.scheduler.state_dict(), "the LR scheduler's state"),
        "scaler": _json_ready(_scaler_state(parts.scaler), "the gradient scaler's state"),
    }
    if procs.main:
        shutil.rmtree(staging, ignore_errors=True)
    procs.barrier()
    staging.mkdir(parents=True, exist_ok=True)
    _write_text(staging / rng_file(procs.index), json.dumps(rng_state(procs.device)))
    if procs.main:  # the record first: a leftover of this save can be told by its run id
        _write_text(staging / TRAINER_STATE_FILE, json.dumps(record, indent=1))
        save_model(parts.module, str(staging / MODEL_FILE))
        save_file(optimizer_tensors, str(staging / OPTIMIZER_FILE))
        for name in (MODEL_FILE, OPTIMIZER_FILE):
            _fsync(staging / name)
    procs.barrier()
    if procs.main:
        files = sorted(p.name for p in staging.iterdir())
        _write_text(staging / COMPLETE_FILE, json.dumps({"format": FORMAT, "files": files}))
        _publish(staging, path)
    procs.barrier()


def _publish(staging: Path, path: Path) -> None:
    """Rename a complete staging folder to ``path``, replacing an earlier save of that step."""
    if not path.exists():
        staging.rename(path)
        return
    retired = path.with_name(path.name + RETIRED_SUFFIX)
    shutil.rmtree(retired, ignore_errors=True)
    path.rename(retired)
    staging.rename(path)
    shutil.rmtree(retired)


def rng_file(index: int) -> str:
    return f"rng-{index}.json"


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file, flushed to disk, renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer state dict as safetensors tensors + a JSON part (param groups, scalars)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            key = f"{int(index)}.{name}"
            if isinstance(value, Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = _json_ready(value, f"the optimizer's {key!r}")
    groups = _json_ready(state["param_groups"], "the optimizer's parameter groups")
    return tensors, {"param_groups": groups, "scalars": scalars}


def _json_ready(value: Any, what: str) -> Any:
    """``value`` if it is plain JSON data (tuples allowed), else a ``CheckpointError``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_ready(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_ready(v, what) for k, v in value.items()}
    raise CheckpointError(
        f"{what} holds a {type(value).__name__}, which a training state stores only as plain "
        "JSON data (no pickle)"
    )


def _scaler_state(scaler: Any | None) -> dict[str, Any]:
    return {} if scaler is None else scaler.state_dict()


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states as JSON data."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # the legacy form, get_state's default
    name, keys, pos, has_gauss, cached = numpy_state
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    module = _device_module(device)
    if module is not None:
        state[device.type] = [_b64(s) for s in module.get_rng_state_all()]
    return state


def _b64(state: Tensor) -> str:
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def _from_b64(text: str) -> Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8)


def _device_module(device: torch.device) -> Any | None:
    """``torch.cuda`` (or the like) when training runs on such a device, else None."""
    if device.type == "cpu":
        return None
    module = getattr(torch, device.type, None)
    return module if hasattr(module, "get_rng_state_all") else None


# -- reading ------------------------------------------------------------------------------------


def read_state(path: Path, parts: StateParts, procs: Processes) -> dict[str, Any]:
    """Restore a complete state into ``parts`` and this process's RNGs; returns its JSON record.

    Only safetensors and JSON files are read. Any mismatch (another model, optimizer, process
    count, a tampered or truncated file) is a ``CheckpointError`` naming the file.
    """
    _require_complete(path, "--resume")
    listed = _read_json(path / COMPLETE_FILE)
    missing = [f for f in listed.get("files", []) if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: files listed in {COMPLETE_FILE} are missing: {missing}")
    record = _read_json(path / TRAINER_STATE_FILE)
    if record.get("format") != FORMAT:
        raise CheckpointError(
            f"{path / TRAINER_STATE_FILE}: format {record.get('format')!r}, expected {FORMAT}"
        )
    if record.get("num_processes") != procs.count:
        raise CheckpointError(
            f"{path / TRAINER_STATE_FILE}: written by {record.get('num_processes')} process(es); "
            f"resume with the same number (this run has {procs.count})"
        )
    # read on the CPU; load_state_dict copies into the parameters wherever they live
    _guarded(path / MODEL_FILE, lambda f: load_model(parts.module, f, strict=True, device="cpu"))
    optimizer = _guarded(
        path / OPTIMIZER_FILE, lambda f: _join_optimizer(load_file(f), record["optimizer"], parts)
    )
    _guarded(path / OPTIMIZER_FILE, lambda f: parts.optimizer.load_state_dict(optimizer))
    where = path / TRAINER_STATE_FILE
    _load_json_state(parts.scheduler, record.get("scheduler"), where, "scheduler")
    if parts.scaler is not None:
        _load_json_state(parts.scaler, record.get("scaler"), where, "scaler")
    rng = path / rng_file(procs.index)
    _guarded(rng, lambda f: set_rng_state(_read_json(Path(f)), procs.device))
    return record


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not readable JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _guarded(path: Path, load: Callable[[str], Any]) -> Any:
    """Run ``load(str(path))``; any failure becomes a ``CheckpointError`` naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load(str(path))
    except Exception as err:  # safetensors, shape, key and type errors alike
        raise CheckpointError(f"{path}: cannot be restored: {err}") from err


def _join_optimizer(
    tensors: dict[str, Tensor], saved: dict[str, Any], parts: StateParts
) -> dict[str, Any]:
    """The optimizer state dict from its safetensors and JSON parts, checked against the live one."""
    live = parts.optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(live) or any(
        set(g) != set(h) for g, h in zip(groups, live, strict=False)
    ):
        raise CheckpointError("parameter groups differ from this run's optimizer")
    groups = [
        {k: tuple(v) if isinstance(h[k], tuple) else v for k, v in g.items()}
        for g, h in zip(groups, live, strict=True)
    ]
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": groups}


def _load_json_state(obj: Any, saved: Any, where: Path, what: str) -> None:
    live = obj.state_dict()
    if not live and saved == {}:  # e.g. a disabled gradient scaler
        return
    if not isinstance(saved, dict) or set(saved) != set(live):
        got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise CheckpointError(
            f"{where}: the {what} state has keys {got}; this run's {what} has {sorted(live)}"
        )
    try:
        obj.load_state_dict(saved)
    except Exception as err:
        raise CheckpointError(f"{where}: the {what} state cannot be restored: {err}") from err


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore RNG states written by ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_from_b64(state["torch"]))
    module = _device_module(device)
    if module is not None and device.type in state:
        saved = state[device.type]
        for index in range(min(len(saved), module.device_count())):
            module.set_rng_state(_from_b64(saved[index]), index)
