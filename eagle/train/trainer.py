"""The training loop: epochs, held-out evaluation, checkpoints, resume, head export.

Owns ``Trainer``. One code path for every backend: the model (``loss.HeadObjective``) and the
optimizer go through ``accelerator.prepare``, which gives plain CPU/GPU training, DDP over
several processes, or a DeepSpeed engine, depending on how ``Accelerator`` was built.

Design choices:
- Batches are planned here (``data.plan_batches`` + ``shard_batches``), not by accelerate's
  dataloader wrapper: the plan depends only on the seed, the epoch and the process count, so a
  resumed run skips exactly the batches it had done.
- The LR scheduler counts optimizer steps; it is stepped by this loop when gradients were
  synchronised.
- Training states (``eagle.train.state``: model, optimizer, scheduler, progress and RNG states
  in safetensors and JSON, never pickle, ``COMPLETE`` written last) are written as
  ``CPDIR/state-<step>`` at the end of each epoch and every ``save_every`` optimizer steps; the
  newest ``keep_checkpoints`` complete states of this run are kept. Each epoch also (re)writes
  the head in the published format to ``CPDIR/head`` with ``eagle.model.checkpoint.save_head``.
  Under DeepSpeed (or FSDP) no training states are written and ``--resume`` is refused: their
  states are the backend's own pickle files.
- A non-finite training loss stops the run with ``NonFiniteError`` (checked once per optimizer
  step, across processes), and weights that are not finite are never saved or exported.
- Evaluation runs the unwrapped module (no DDP collectives per batch), each process on its
  share of the validation batches, and sums the counters across processes once. It uses the
  held-out split of the training data, or every sample of a separate validation data set
  (``val_dataset``, ``--val-data``) that stays fixed while the training data grows.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from eagle.model.checkpoint import save_head
from eagle.train.build import make_optimizer, make_scheduler
from eagle.train.config import TrainConfig
from eagle.train.data import FeatureDataset, collate, plan_batches, shard_batches, split_samples
from eagle.train.loss import HeadObjective, LossSpec
from eagle.train.state import (
    HEAD_DIR,
    METRICS_FILE,
    CheckpointError,
    Processes,
    StateParts,
    choose_state,
    is_complete,
    prune_states,
    read_state,
    state_dirs,
    state_name,
    write_state,
)

_NO_STATES = (DistributedType.DEEPSPEED, DistributedType.FSDP, DistributedType.MEGATRON_LM)


class NonFiniteError(RuntimeError):
    """Training diverged: a loss or a weight is NaN or infinite."""


@dataclass
class Progress:
    """Where training stands; saved with every checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # micro-batches of that epoch this process has trained on
    step: int = 0  # optimizer steps taken

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]
        self.batches_done = state["batches_done"]
        self.step = state["step"]


class Meter:
    """Sums per-step counters (``loss.LossSpec.metrics``) and tokens over batches."""

    def __init__(self, spec: LossSpec) -> None:
        self.spec = spec
        self.sums: dict[str, Tensor] = {}
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, sums: dict[str, Tensor], tokens: int) -> None:
        for name, value in sums.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.tokens += tokens

    def summary(self) -> dict[str, Any]:
        """Loss (weighted over steps, as trained), per-step loss and top-1 accuracy."""
        if not self.sums:
            return {"loss": float("nan"), "step_loss": [], "accuracy": [], "tokens": self.tokens}
        count = self.sums["count"].clamp(min=1)
        step_loss = self.sums["loss"] / count
        weights = self.spec.step_weight ** torch.arange(len(count), device=count.device)
        out = {
            "loss": float((weights * step_loss).sum()),
            "step_loss": _rounded(step_loss),
            "accuracy": _rounded(self.sums["correct"] / count),
            "tokens": self.tokens,
        }
        for part in set(self.spec.metrics) - {"count", "correct", "loss"}:
            out[f"{part}_loss"] = _rounded(self.sums[part] / count)
        return out


def _rounded(values: Tensor) -> list[float]:
    return [round(float(v), 4) for v in values]


class Trainer:
    def __init__(
        self,
        accelerator: Accelerator,
        objective: HeadObjective,
        dataset: FeatureDataset,
        config: TrainConfig,
        cpdir: Path,
        val_dataset: FeatureDataset | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.config = config
        self.cpdir = Path(cpdir)
        self.dataset = dataset
        self.spec = objective.spec
        self.train_ids, self.val_ids = split_samples(
            len(dataset), config.train.val_fraction, config.train.seed
        )
        self.val_dataset = val_dataset
        if val_dataset is not None:  # a fixed validation set replaces the held-out split
            self.train_ids = sorted(self.train_ids + self.val_ids)
            self.val_ids = list(range(len(val_dataset)))
        self.progress = Progress()
        self.run_id = uuid.uuid4().hex  # recorded in each state; a resume continues the run
        optimizer = make_optimizer(objective.head, config)
        self.scheduler = make_scheduler(optimizer, config, self.total_steps())
        self.model, self.optimizer = accelerator.prepare(objective, optimizer)
        # micro-batches with a non-finite loss since the start, summed on the device (no sync)
        self._nonfinite = torch.zeros((), device=accelerator.device)

    # -- planning -------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's training batches of an epoch (sample indices)."""
        t = self.config.train
        plan = plan_batches(
            self.dataset.lengths, self.train_ids, t.batch_size, t.batch_tokens,
            seed=t.seed * 100003 + epoch, shuffle=True,
        )  # fmt: skip
        acc = self.accelerator
        mine = shard_batches(
            plan, acc.process_index, acc.num_processes, t.gradient_accumulation_steps
        )
        if not mine:
            raise ValueError(
                f"{len(plan)} training batches cannot feed {acc.num_processes} process(es) x "
                f"{t.gradient_accumulation_steps} accumulation steps; use more data or smaller "
                "batches"
            )
        return mine

    def total_steps(self) -> int:
        t = self.config.train
        per_epoch = [
            len(self.epoch_batches(e)) // t.gradient_accumulation_steps for e in range(t.epochs)
        ]
        return min(sum(per_epoch), t.max_steps or sum(per_epoch))

    def _loader(
        self, batches: list[list[int]], dataset: FeatureDataset | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset or self.dataset,
            batch_sampler=batches,
            collate_fn=partial(collate, extra=self.spec.steps + 1),
            num_workers=self.config.train.num_workers,
            pin_memory=self.accelerator.device.type == "cuda",
            # its own generator: creating an iterator must not draw from the global RNG (noise),
            # or a resumed run would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(self.config.train.seed),
        )

    # -- training -------------------------------------------------------------------------------

    def fit(self) -> Path | None:
        """Train the remaining epochs; returns the exported head folder (main process)."""
        head_dir = None
        self._print_plan()
        while self.progress.epoch < self.config.train.epochs and not self._done():
            epoch = self.progress.epoch
            train, completed = self._train_epoch(epoch)
            if completed:
                self.progress.epoch, self.progress.batches_done = epoch + 1, 0
            self.report(epoch, train, self.evaluate())
            self.save_checkpoint()
            head_dir = self.export_head()
        return head_dir

    def _done(self) -> bool:
        limit = self.config.train.max_steps
        return limit is not None and self.progress.step >= limit

    def _train_epoch(self, epoch: int) -> tuple[dict[str, Any], bool]:
        """Train on the epoch's remaining batches; returns the summary and whether it finished."""
        batches = self.epoch_batches(epoch)
        skip = self.progress.batches_done
        meter = Meter(self.spec)
        self.model.train()
        bar = tqdm(
            total=len(batches), initial=skip, desc=f"epoch {epoch + 1}", dynamic_ncols=True,
            disable=not self.accelerator.is_local_main_process,
        )  # fmt: skip
        for batch in self._loader(batches[skip:]):
            self._train_step(batch, meter)
            bar.update(1)
            if bar.n % 10 == 1 and not bar.disable:  # reading the counters syncs a GPU
                bar.set_postfix(self._postfix(meter), refresh=False)
            if self._done():
                break
        bar.close()
        return self._gather(meter), self.progress.batches_done == len(batches)

    def _train_step(self, batch: dict[str, Tensor], meter: Meter) -> None:
        acc, t = self.accelerator, self.config.train
        batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
        with acc.accumulate(self.model):
            loss, sums = self.model(batch)
            self._nonfinite = self._nonfinite + (~torch.isfinite(loss.detach())).float()
            acc.backward(loss)
            if acc.sync_gradients and acc.distributed_type != DistributedType.DEEPSPEED:
                acc.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad()
        meter.add(sums, int(batch["lengths"].sum()))
        self.progress.batches_done += 1
        if acc.sync_gradients:
            self._check_loss()
            self.scheduler.step()
            self.progress.step += 1
            if t.save_every and self.progress.step % t.save_every == 0:
                self.save_checkpoint()

    def _check_loss(self) -> None:
        """Stop if a micro-batch of any process had a non-finite loss (one sync per step)."""
        if float(self.accelerator.reduce(self._nonfinite, reduction="sum")) == 0:
            return
        t = self.config.train
        raise NonFiniteError(
            f"the training loss is not finite (NaN or infinite) at optimizer step "
            f"{self.progress.step + 1}, epoch {self.progress.epoch + 1}; stopped without saving "
            f"a state or exporting the head. Lower train.lr (--lr, now {t.lr:g}) or "
            f"train.grad_clip (now {t.grad_clip:g}), or check the data in --tmpdir"
        )

    def _check_weights(self, purpose: str) -> None:
        """Refuse to write weights that are not finite."""
        module = self.accelerator.unwrap_model(self.model)
        bad = [n for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise NonFiniteError(
                f"the head's weights are not finite ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}) at step {self.progress.step}; not {purpose}. "
                f"Lower train.lr (--lr, now {self.config.train.lr:g})"
            )

    def _postfix(self, meter: Meter) -> dict[str, str]:
        elapsed = max(time.perf_counter() - meter.start, 1e-9)
        sums = meter.sums
        count = sums["count"].clamp(min=1)
        return {
            "loss": f"{float(sums['loss'][0] / count[0]):.3f}",
            "acc0": f"{float(sums['correct'][0] / count[0]):.2f}",
            "tok/s": f"{meter.tokens * self.accelerator.num_processes / elapsed:.0f}",
            "lr": f"{self.scheduler.get_last_lr()[0]:.2e}",
        }

    # -- evaluation and reporting ---------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Loss and per-step top-1 accuracy on the held-out samples (no input noise)."""
        t, acc = self.config.train, self.accelerator
        dataset = self.val_dataset or self.dataset
        plan = plan_batches(
            dataset.lengths, self.val_ids, t.batch_size, t.batch_tokens, t.seed, shuffle=False
        )
        module = acc.unwrap_model(self.model)
        module.eval()
        meter = Meter(self.spec)
        for batch in self._loader(plan[acc.process_index :: acc.num_processes], dataset):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            _, sums = module(batch)
            meter.add(sums, int(batch["lengths"].sum()))
        module.train()
        return self._gather(meter)

    def _gather(self, meter: Meter) -> dict[str, Any]:
        """The meter's summary over all processes (one collective per counter)."""
        elapsed = time.perf_counter() - meter.start
        steps, device = self.spec.steps, self.accelerator.device
        local = {n: meter.sums.get(n, torch.zeros(steps, device=device)) for n in self.spec.metrics}
        local["tokens"] = torch.tensor([float(meter.tokens)], device=device)
        total = {
            n: self.accelerator.reduce(v.to(device), reduction="sum") for n, v in local.items()
        }
        merged = Meter(self.spec)
        merged.add({n: v for n, v in total.items() if n != "tokens"}, int(total["tokens"].item()))
        summary = merged.summary()
        summary["tokens_per_s"] = round(summary["tokens"] / max(elapsed, 1e-9), 1)
        return summary

    def report(self, epoch: int, train: dict[str, Any], val: dict[str, Any]) -> None:
        acc = self.accelerator
        record = {"epoch": epoch + 1, "step": self.progress.step, "train": train, "val": val}
        acc.print(
            f"epoch {epoch + 1}: step {self.progress.step} | train loss {train['loss']:.4f} "
            f"acc {train['accuracy']} ({train['tokens_per_s']:.0f} tok/s) | "
            f"val loss {val['loss']:.4f} acc {val['accuracy']}"
        )
        if acc.is_main_process:
            self.cpdir.mkdir(parents=True, exist_ok=True)
            with open(self.cpdir / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _print_plan(self) -> None:
        acc = self.accelerator
        acc.print(
            f"{self.config.variant}: {len(self.train_ids)} training / {len(self.val_ids)} held-out "
            f"samples, {self.spec.steps} unrolled step(s), {acc.num_processes} process(es) "
            f"({acc.distributed_type.value}, mixed precision {acc.mixed_precision}), "
            f"{self.total_steps()} optimizer steps, starting at step {self.progress.step}"
        )
        if not self.states_supported:
            acc.print(
                f"note: {acc.distributed_type.value}: no resumable training states are written "
                f"(the backend's are pickle files); the head is exported to {HEAD_DIR}/ each epoch"
            )

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def states_supported(self) -> bool:
        """Whether this backend's training state can be written without pickle."""
        return states_supported(self.accelerator)

    def _state_parts(self) -> StateParts:
        acc = self.accelerator
        return StateParts(acc.unwrap_model(self.model), self.optimizer, self.scheduler, acc.scaler)

    def _processes(self) -> Processes:
        acc = self.accelerator
        return Processes(acc.process_index, acc.num_processes, acc.wait_for_everyone, acc.device)

    def save_checkpoint(self) -> Path | None:
        """Write ``CPDIR/state-<step>`` and prune this run's older states (None: not supported)."""
        if not self.states_supported:
            return None
        self._check_weights("saving a training state")
        path = self.cpdir / state_name(self.progress.step)
        info = {
            **self.progress.state_dict(),
            "run_id": self.run_id,
            "micro_step": self.accelerator.step,
            "metrics_lines": self._metrics_lines(),
            "config": self.config.to_dict(),
        }
        write_state(path, self._state_parts(), self._processes(), info)
        if self.accelerator.is_main_process:
            prune_states(self.cpdir, self.run_id, self.config.train.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        return path

    def resume(self, path: str | Path | None = None) -> Path:
        """Restore a complete state (the newest complete one in --cpdir when ``path`` is None)."""
        acc = self.accelerator
        check_resumable(acc)
        chosen, notes = choose_state(self.cpdir, Path(path) if path else None)
        for note in notes:
            acc.print(f"note: {note}")
        record = read_state(chosen, self._state_parts(), self._processes())
        progress, run_id, micro_step = _trainer_fields(record, chosen)
        self.progress.load_state_dict(progress)
        self.run_id, acc.step = run_id, micro_step
        if acc.is_main_process and isinstance(record.get("metrics_lines"), int):
            self._trim_metrics(record["metrics_lines"])
        acc.print(
            f"resumed from {chosen}: epoch {self.progress.epoch + 1}, step {self.progress.step}"
        )
        return chosen

    def _metrics_lines(self) -> int:
        path = self.cpdir / METRICS_FILE
        return len(path.read_text().splitlines()) if path.is_file() else 0

    def _trim_metrics(self, count: int) -> None:
        """Keep the first ``count`` metrics lines: later ones came after the resumed state."""
        path = self.cpdir / METRICS_FILE
        lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
        if len(lines) > count:
            path.write_text("".join(lines[:count]))
            self.accelerator.print(
                f"note: dropped {len(lines) - count} line(s) of {path} written after the resumed "
                "state; the resumed run writes them again"
            )

    def export_head(self) -> Path | None:
        """Write the head in the published format to CPDIR/head (main process)."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        self._check_weights("exporting the head")
        head = self.accelerator.unwrap_model(self.model).head
        return save_head(head, self.cpdir / HEAD_DIR)


def states_supported(accelerator: Accelerator) -> bool:
    """Whether training states can be written and resumed without pickle on this backend."""
    return accelerator.distributed_type not in _NO_STATES


def check_resumable(accelerator: Accelerator) -> None:
    """Refuse ``--resume`` on a backend whose states only exist as pickle files."""
    if not states_supported(accelerator):
        raise CheckpointError(
            f"--resume is not available under {accelerator.distributed_type.value}: its training "
            "states are the backend's own pickle files, which are never loaded (unpickling can "
            "run code); start afresh (--overwrite), or train without DeepSpeed/FSDP"
        )


def checkpoints(cpdir: Path) -> list[Path]:
    """Complete training states in ``cpdir`` (the ones ``--resume`` can use), oldest first."""
    return [p for p in state_dirs(cpdir) if is_complete(p)]


def _trainer_fields(record: dict[str, Any], path: Path) -> tuple[dict[str, int], str, int]:
    """Progress, run id and accelerate's micro-step counter of a state's JSON record."""
    names = ("epoch", "batches_done", "step", "micro_step")
    values: dict[str, Any] = {n: record.get(n) for n in names}  # JSON, checked next
    bad = [n for n, v in values.items() if type(v) is not int or v < 0]
    if bad or not isinstance(record.get("run_id"), str):
        raise CheckpointError(
            f"{path}/trainer_state.json: {bad or ['run_id']} missing or not valid (expected "
            "non-negative integers and a run id string)"
        )
    progress = {n: values[n] for n in names[:3]}
    return progress, record["run_id"], values["micro_step"]
