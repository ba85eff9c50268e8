"""``python -m eagle.ge_data.allocation``: the data generation split over N worker processes.

Takes every flag of ``python -m eagle.ge_data`` plus ``--num-workers N`` (alias ``--gpus``, the
original's name). Worker K runs the same stages on every N-th conversation starting at K
(``--part K --num-parts N``), on GPU ``K mod (number of GPUs)`` when CUDA devices exist and
``--device`` is not cpu, else on the CPU with the threads split between workers. Each worker
writes ``shard-partK-*.safetensors``, ``manifest-partK.json`` and, with ``--regenerate``,
``regenerated-partK.jsonl`` into ``--outdir``, and logs to ``OUTDIR/logs/part-K.log``. When all
workers succeed, their manifests are merged into ``manifest.json`` and ``vocab.safetensors`` is
counted from all shards.

CPU smoke run::

    python -m eagle.ge_data.allocation --num-workers 2 --outdir /tmp/eagle-data --limit 8

Design choices:
- Workers are spawned processes that call the same ``run`` as the single-process entry point
  (no argument-string surgery); the parent only watches: it sums the workers' manifests into
  one progress bar with the total tokens/s.
- A rerun with the same flags resumes every worker; the merge is idempotent.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import torch

from eagle.ge_data.feature_format import (
    Manifest,
    existing_manifest,
    merge_manifests,
    part_manifest_name,
    write_manifest,
    write_vocab,
)
from eagle.ge_data.main import run
from eagle.ge_data.options import build_parser, validate
from eagle.ge_data.vocab import argmax_counts_from_shards, build_vocab, counts_from_shards

logger = logging.getLogger("eagle.ge_data.allocation")


def build_allocation_parser() -> argparse.ArgumentParser:
    parser = build_parser(prog="python -m eagle.ge_data.allocation")
    parser.description = (
        "Generate EAGLE training data with N worker processes (one per GPU, or CPU workers "
        "sharing the cores), each on a disjoint part of the conversations; see "
        "python -m eagle.ge_data for the data flags."
    )
    parser.add_argument(
        "--num-workers",
        "--gpus",
        dest="num_workers",
        type=int,
        required=True,
        help="number of worker processes (with CUDA, one per GPU, cycling if fewer GPUs)",
    )
    return parser


def worker_plan(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """(device, threads or None) for each worker."""
    n = args.num_workers
    if args.device.startswith("cuda"):
        count = torch.cuda.device_count()
        return [(f"cuda:{k % count}", args.threads) for k in range(n)]
    threads = args.threads or max(1, torch.get_num_threads() // n)
    return [("cpu", threads)] * n


def _worker(options: dict[str, Any], log_path: str) -> None:
    """Entry of a spawned worker: run one part, logging to ``log_path``; exit 1 on error."""
    logging.basicConfig(
        filename=log_path, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        run(argparse.Namespace(**options))
    except Exception:
        logging.getLogger("eagle.ge_data").exception("worker failed")
        sys.exit(1)


def _progress(outdir: Path, num_parts: int) -> tuple[int, int, int]:
    """(regenerated conversations, stored samples, stored tokens) summed over the workers."""
    regenerated = samples = tokens = 0
    for part in range(num_parts):
        regen = outdir / f"regenerated-part{part}.jsonl"
        if regen.exists():
            regenerated += regen.read_bytes().count(b"\n")
        try:
            manifest = existing_manifest(outdir, part_manifest_name(part))
        except ValueError:  # being replaced right now
            continue
        if manifest is not None:
            samples, tokens = samples + manifest.num_samples, tokens + manifest.num_tokens
    return regenerated, samples, tokens


def _watch(processes: list[Any], outdir: Path, quiet: bool) -> None:
    """Wait for the workers, showing their summed progress (tokens/s of capture)."""
    from tqdm.auto import tqdm

    with tqdm(desc="capture (all workers)", unit="tok", unit_scale=True, disable=quiet) as bar:
        while any(p.is_alive() for p in processes):
            time.sleep(1.0)
            regenerated, samples, tokens = _progress(outdir, len(processes))
            bar.update(tokens - bar.n)
            bar.set_postfix(samples=samples, regenerated=regenerated, refresh=False)
        for p in processes:
            p.join()


def start_workers(args: argparse.Namespace) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    logs = Path(args.outdir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for part, (device, threads) in enumerate(worker_plan(args)):
        options = {**vars(args), "part": part, "num_parts": args.num_workers}
        options.update(device=device, threads=threads, quiet=True)
        process = context.Process(
            target=_worker, args=(options, str(logs / f"part-{part}.log")), name=f"part-{part}"
        )
        process.start()
        processes.append(process)
    return processes


def merge(outdir: Path, num_parts: int, draft_vocab_size: int) -> Manifest:
    """Merge the worker manifests into manifest.json and count the vocabulary of all shards."""
    parts = []
    for part in range(num_parts):
        manifest = existing_manifest(outdir, part_manifest_name(part))
        if manifest is None:
            raise ValueError(f"worker {part} wrote no {part_manifest_name(part)} in {outdir}")
        parts.append(manifest)
    merged = merge_manifests(parts)
    write_manifest(merged)
    target, shards = merged.target, merged.shard_files
    counts = counts_from_shards(outdir, shards, target.vocab_size)
    argmax = argmax_counts_from_shards(outdir, shards, target.vocab_size)
    write_vocab(outdir, build_vocab(counts, draft_vocab_size, target.fingerprint, argmax))
    return merged


def _check_outdir(outdir: Path, num_workers: int) -> None:
    existing = existing_manifest(outdir)
    if existing is not None and existing.source.get("num_parts") != num_workers:
        raise ValueError(
            f"--outdir {outdir} holds data of a run with num_parts="
            f"{existing.source.get('num_parts')}; resume it the same way, or use another "
            "--outdir"
        )


def main(argv: list[str] | None = None) -> int:
    parser = build_allocation_parser()
    args = parser.parse_args(argv)
    if args.part is not None or args.num_parts is not None:
        parser.error("--part/--num-parts are set by allocation itself; use --num-workers")
    if args.num_workers < 1:
        parser.error(f"--num-workers must be >= 1, got {args.num_workers}")
    validate(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    outdir = Path(args.outdir)
    try:
        _check_outdir(outdir, args.num_workers)
        processes = start_workers(args)
        _watch(processes, outdir, args.quiet)
        failed = [p.name for p in processes if p.exitcode != 0]
        if failed:
            raise ValueError(
                f"workers {', '.join(failed)} failed; see {outdir / 'logs'}; rerun to resume"
            )
        if args.regen_only:
            return 0
        merged = merge(outdir, args.num_workers, args.draft_vocab_size)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info(
        "%s: %d samples, %d tokens from %d workers",
        outdir, merged.num_samples, merged.num_tokens, args.num_workers,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
