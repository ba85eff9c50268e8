"""Entry point: train an EAGLE-1 or EAGLE-3 draft head on generated features.

    accelerate launch -m --mixed_precision=bf16 eagle.train.main --basepath TARGET \\
        --tmpdir DATA --cpdir CKPT --configpath eagle/train/configs/smollm2_eagle3.json

The same script runs single-process (``python -m eagle.train.main ...``), under ``accelerate
launch`` with any number of processes, and under DeepSpeed (``--deepspeed ds_config.json``, or
accelerate's own DeepSpeed settings). CPU smoke run on the built-in SmolLM2 target:

    python -m eagle.train.main --basepath smollm2-135m-instruct --tmpdir DATA --cpdir /tmp/ckpt \\
        --configpath eagle/train/configs/smollm2_eagle1.json --max-steps 20

Outputs in ``--cpdir``: ``state-<step>/`` (resumable with ``--resume``; safetensors and JSON,
see ``eagle.train.state``), ``metrics.jsonl`` (one line per epoch) and ``head/``, the head in the
published format for ``EaModel.from_pretrained(TARGET, CKPT/head)``. A fresh run needs an empty
(or new) ``--cpdir``; ``--overwrite`` replaces an earlier run's outputs, ``--resume`` continues
it from its newest complete state. ``--init-head HEAD`` fine-tunes a trained head
(e.g. the shipped one on more data) instead of starting from random weights.

The target flag is every command's (``eagle.model.loading``): ``--basepath``, the original
EAGLE spelling, or ``--base-model-path``; default the built-in ``smollm2-135m-instruct``.
``--target-dtype`` (float32) is the precision of the loss's target distribution, not a
runtime choice, so it keeps its own name and default.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DeepSpeedPlugin,
    InitProcessGroupKwargs,
    parse_flag_from_env,
    set_seed,
)

from eagle.ge_data.feature_format import check_target, read_manifest, read_vocab
from eagle.model.draft_head import weight_of
from eagle.model.loading import DTYPES, add_model_flags, show_library_logs
from eagle.train.build import init_from_head, load_target, make_head
from eagle.train.config import (
    SCHEDULES,
    ConfigError,
    TrainConfig,
    load_config,
    with_overrides,
)
from eagle.train.data import FeatureDataset, merge_vocabs
from eagle.train.loss import HeadObjective, LossSpec
from eagle.train.state import CheckpointError, prepare_cpdir
from eagle.train.trainer import NonFiniteError, Trainer, check_resumable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="eagle.train.main", description=__doc__.split("\n")[0])
    add_model_flags(
        p, head=False, tree=False, dtype=False, device=False, target_aliases=("--basepath",)
    )
    p.add_argument(
        "--tmpdir", required=True, nargs="+",
        help="data folder written by eagle.ge_data; several are trained on as one set (captured "
        "with the same feature settings; without --init-head the draft vocabulary is ranked on "
        "their counts together)",
    )  # fmt: skip
    p.add_argument("--cpdir", required=True, help="output folder: checkpoints, metrics, head/")
    p.add_argument("--configpath", required=True, help="training config JSON (eagle/train/configs)")
    p.add_argument("--lr", type=float, help="learning rate (overrides train.lr)")
    p.add_argument("--bs", type=int, help="samples per micro-batch (overrides train.batch_size)")
    p.add_argument("--batch-tokens", type=int, help="padded tokens per micro-batch")
    p.add_argument(
        "--gradient-accumulation-steps", type=int, help="micro-batches per optimizer step"
    )
    p.add_argument("--epochs", type=int, help="number of epochs (overrides train.epochs)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument(
        "--schedule", choices=SCHEDULES, help="learning-rate schedule (overrides train.schedule)"
    )
    p.add_argument("--warmup-steps", type=int, help="warm-up steps (overrides train.warmup_steps)")
    p.add_argument(
        "--val-fraction", type=float, help="held-out share of the data (train.val_fraction)"
    )
    p.add_argument(
        "--val-data",
        help="a separate validation data folder (eagle.ge_data, same target): every sample of it "
        "is evaluated after each epoch instead of a held-out share of --tmpdir",
    )
    p.add_argument("--seed", type=int, help="seed of initialisation, split, order and noise")
    p.add_argument(
        "--init-head",
        help="start from this trained head (published format, same architecture) instead of a "
        "random one; it keeps its own draft vocabulary; optimizer and schedule start afresh",
    )
    p.add_argument(
        "--resume", nargs="?", const="", default=None,
        help="resume from a state folder, or (no value) from the newest complete one in --cpdir",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="start afresh in a used --cpdir: delete its state-*/, head/ and metrics.jsonl first",
    )  # fmt: skip
    p.add_argument(
        "--deepspeed", "--deepspeed_config", dest="deepspeed",
        help="DeepSpeed JSON config (e.g. eagle/train/configs/ds_config.json)",
    )  # fmt: skip
    p.add_argument(
        "--mixed-precision", choices=("no", "bf16", "fp16"),
        help="default: what `accelerate launch --mixed_precision` set, else no",
    )  # fmt: skip
    p.add_argument(
        "--target-dtype", choices=DTYPES, default="float32",
        help="dtype of the target's embedding and lm_head (target distribution)",
    )  # fmt: skip
    p.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # set by `deepspeed` launcher
    args = p.parse_args(argv)
    if args.overwrite and args.resume is not None:
        p.error("--overwrite and --resume contradict each other; pass one of them")
    return args


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The config file with the command-line overrides; a bad value names its flag too."""
    flags = {  # train field -> the flag that overrides it
        "lr": "--lr", "batch_size": "--bs", "batch_tokens": "--batch-tokens",
        "gradient_accumulation_steps": "--gradient-accumulation-steps", "epochs": "--epochs",
        "max_steps": "--max-steps", "seed": "--seed", "schedule": "--schedule",
        "warmup_steps": "--warmup-steps", "val_fraction": "--val-fraction",
    }  # fmt: skip
    given = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in flags.items()}
    try:
        return with_overrides(load_config(args.configpath), **given)
    except ConfigError as err:
        named = [
            f"{flags[key]} {value}"
            for key, value in given.items()
            if value is not None and re.search(rf"\btrain\.{key}\b", str(err))
        ]
        if not named:
            raise
        raise ConfigError(f"{err} (given as {', '.join(named)})") from err


def make_accelerator(args: argparse.Namespace, config: TrainConfig) -> Accelerator:
    """Accelerator for the chosen backend; DeepSpeed settings left 'auto' come from the config."""
    plugin = None
    if args.deepspeed:
        _single_process_defaults()
        plugin = DeepSpeedPlugin(hf_ds_config=str(args.deepspeed))
    kwargs: dict[str, Any] = (
        {"mixed_precision": args.mixed_precision} if args.mixed_precision else {}
    )
    on_cpu = not torch.accelerator.is_available()
    if plugin is not None or parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        # DeepSpeed on CPU: accelerate finds no backend by itself and would count 1 process
        if on_cpu:
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    else:
        # several processes (torchrun) without an accelerator device run as MULTI_CPU (gloo)
        kwargs["cpu"] = on_cpu
    accelerator = Accelerator(
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        deepspeed_plugin=plugin,
        **kwargs,
    )
    if accelerator.state.deepspeed_plugin is not None:
        _fill_deepspeed(accelerator.state.deepspeed_plugin.deepspeed_config, config)
    return accelerator


def _single_process_defaults() -> None:
    """Rendezvous variables for a DeepSpeed run started without a launcher (one process)."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**defaults, "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)


def _fill_deepspeed(ds: dict[str, Any], config: TrainConfig) -> None:
    """Fill 'auto' micro-batch size and gradient clipping from the training config.

    Batches are planned by this trainer (no prepared DataLoader), so DeepSpeed's micro-batch
    size is nominal: only its bookkeeping reads it.
    """
    for key, value in (
        ("train_micro_batch_size_per_gpu", config.train.batch_size),
        ("gradient_clipping", config.train.grad_clip),
    ):
        if ds.get(key, "auto") == "auto":
            ds[key] = value


def build_trainer(
    args: argparse.Namespace, config: TrainConfig, accelerator: Accelerator
) -> Trainer:
    set_seed(config.train.seed)
    manifests = [read_manifest(folder) for folder in args.tmpdir]
    target = load_target(args.base_model_path, getattr(torch, args.target_dtype))
    parts = target.parts
    vocab_size, width = weight_of(parts.embed_tokens).shape
    for manifest in manifests:
        check_target(manifest, target.fingerprint, int(vocab_size), int(width), target.num_layers)
        if not manifest.complete:
            accelerator.print(
                f"warning: {manifest.directory} is still being written; using its finished shards"
            )
    lm_head = parts.lm_head
    assert lm_head is not None  # load_target keeps the target's lm_head
    parts.embed_tokens.to(accelerator.device)
    lm_head.to(accelerator.device)
    vocab = merge_vocabs([read_vocab(m) for m in manifests])
    head = make_head(config, target.config, parts, manifests[0], vocab)
    if args.init_head:
        for note in init_from_head(head, args.init_head, parts):
            accelerator.print(f"note: {note}")
    spec = LossSpec(
        config.variant,
        config.unroll_steps,
        config.train.step_weight,
        config.train.feature_weight,
        config.train.token_weight,
    )
    objective = HeadObjective(head, lm_head, spec, config.noise)
    with_aux = config.variant == "eagle3"
    dataset = FeatureDataset(manifests, config.train.max_len, with_aux=with_aux)
    val_dataset = None
    if args.val_data:
        val_manifest = read_manifest(args.val_data)
        check_target(
            val_manifest, target.fingerprint, int(vocab_size), int(width), target.num_layers
        )
        val_dataset = FeatureDataset(val_manifest, config.train.max_len, with_aux=with_aux)
    return Trainer(accelerator, objective, dataset, config, Path(args.cpdir), val_dataset)


def prepare_output(args: argparse.Namespace, accelerator: Accelerator) -> None:
    """Refuse a used --cpdir for a fresh run (unless --overwrite) or an unsupported --resume.

    Runs before the target and the data are loaded; with --overwrite one process deletes.
    """
    if args.resume is not None:
        check_resumable(accelerator)
        return
    cpdir = Path(args.cpdir)
    if accelerator.is_main_process or not args.overwrite:
        removed = prepare_cpdir(cpdir, args.overwrite)
        if removed:
            accelerator.print(f"--overwrite: removed {', '.join(removed)} from {cpdir}")
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> Path | None:
    args = parse_args(argv)
    config = resolve_config(args)
    accelerator = make_accelerator(args, config)
    prepare_output(args, accelerator)
    trainer = build_trainer(args, config, accelerator)
    if args.resume is not None:
        trainer.resume(args.resume or None)
    head_dir = trainer.fit()
    if head_dir is not None:
        accelerator.print(f"head written to {head_dir}")
    accelerator.end_training()
    return head_dir


def cli() -> None:
    """``python -m eagle.train.main``: errors of the inputs end the run with a one-line message;
    the library's INFO messages show on stderr, as in every command."""
    show_library_logs()
    try:
        main()
    except (ConfigError, CheckpointError, NonFiniteError, FileExistsError) as err:
        raise SystemExit(f"eagle.train.main: error: {err}") from err


if __name__ == "__main__":
    cli()
