"""``python -m eagle.ge_data``: ShareGPT conversations -> (regenerated) -> features on disk.

Owns the command line and the order of the stages: read and select conversations, load the
target, open (or resume) the manifest, optionally regenerate the assistant turns, render with
the chat template, capture features into shards, write the vocabulary statistics.

Smallest CPU run (SmolLM2 from the offline wheel, 20 ShareGPT conversations)::

    python -m eagle.ge_data --base-model-path smollm2-135m-instruct --data sharegpt \\
        --outdir /tmp/eagle-data --limit 20 --max-len 512

Design choices:
- Sample order is a pure function of the input file and ``--offset/--limit/--seed`` (and
  ``--part/--num-parts``), and conversation ids are made unique, so a rerun with the same
  flags resumes: samples already stored are skipped by id, the rest are appended. Raising
  ``--limit`` extends a finished data set.
- ``--part K --num-parts N`` (used by ``eagle.ge_data.allocation``) keeps every N-th
  conversation starting at K, writes ``shard-partK-*`` shards and ``manifest-partK.json``, and
  leaves the vocabulary to the merge.
- Nothing is written outside ``--outdir`` (the regenerated file defaults to a path inside it).
- A run never ends "complete" with nothing in it: a data file without a usable conversation, a
  selection of none, or a capture that stored no sample is an error (exit status 2).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from eagle.benchmarks import load_questions
from eagle.chat.templates import resolve_template
from eagle.ge_data.capture import (
    STORAGE_DTYPES,
    CaptureSettings,
    ShardWriter,
    capture_to_shards,
)
from eagle.ge_data.feature_format import (
    Manifest,
    open_manifest,
    part_manifest_name,
    stored_ids,
    target_info,
    write_manifest,
    write_vocab,
)
from eagle.ge_data.options import (
    BUNDLED,
    build_parser,
    excluded_benchmarks,
    regen_output,
    regen_settings,
    run_settings,
    stores_hidden,
    validate,
)
from eagle.ge_data.regenerate import ChatTarget, read_regenerated, regenerate
from eagle.ge_data.render import RenderedExample, RenderStats, render_conversations
from eagle.ge_data.sharegpt import (
    Conversation,
    ReadStats,
    bundled_sharegpt_path,
    load_sharegpt,
    with_unique_ids,
)
from eagle.ge_data.vocab import build_vocab

logger = logging.getLogger("eagle.ge_data")


def exclusion_prompts(args: argparse.Namespace) -> list[str]:
    """User prompts to keep out of the data (MT-bench turns, HumanEval prompts)."""
    names = excluded_benchmarks(args)
    return [turn for name in names for q in load_questions(name) for turn in q.turns]


def load_conversations(args: argparse.Namespace) -> list[Conversation]:
    """The deterministic selection of this run (and part), with unique ids."""
    path = bundled_sharegpt_path() if args.data == BUNDLED else Path(args.data)
    conversations, stats = load_sharegpt(
        path,
        offset=args.offset,
        limit=args.limit,
        seed=args.seed,
        exclude_prompts=exclusion_prompts(args),
        openings_only=args.distinct_openings,
        split=args.split,
    )
    logger.info("read %s: %s", path, stats.summary())
    check_selection(path, stats, len(conversations))
    conversations = with_unique_ids(conversations)
    if args.max_turns is not None:
        conversations = [c.first_turns(args.max_turns) for c in conversations]
    if args.num_parts is not None:
        conversations = conversations[args.part :: args.num_parts]
    return conversations


def check_selection(path: Path, stats: ReadStats, selected: int) -> None:
    """Raise ValueError, before any model is loaded, when the data file holds no usable
    conversation (empty, a single object, every record unusable) or the flags select none."""
    if not stats.kept:
        raise ValueError(
            f"--data {path} holds no usable conversation ({stats.summary()}); expected a JSON "
            'array of {"id", "conversations": [{"from", "value"}, ...]} records, or JSON lines '
            "of them"
        )
    if not selected:
        raise ValueError(
            f"the flags select none of the {stats.kept} usable conversations of --data {path}: "
            "check --split, --distinct-openings, --exclude-*, --offset and --limit"
        )


def check_target_topk(target_topk: int, vocab_size: int) -> None:
    """--target-topk stores at most the whole vocabulary; checked once the target is known."""
    if target_topk > vocab_size:
        raise ValueError(
            f"--target-topk must be in 0..{vocab_size} (the target's vocabulary), got {target_topk}"
        )


def load_target(args: argparse.Namespace) -> tuple[Any, Any]:
    """(TargetModel, tokenizer) for ``--base-model-path`` on ``--device`` in ``--dtype``,
    through the loader every command shares (``validate`` already resolved the device)."""
    from eagle.model.loading import ModelSpec
    from eagle.model.loading import load_target as load

    return load(ModelSpec(args.base_model_path, dtype=args.dtype, device=args.device))


def default_aux_layers(num_layers: int) -> tuple[int, ...]:
    """The EAGLE-3 layers of ``HeadConfig.default_feature_layers`` for an L-layer target."""
    from eagle.model.draft_head import HeadConfig

    config = HeadConfig("eagle3", 1, 1, 1, 1, 1)
    return config.default_feature_layers(num_layers)


def check_aux_layers(aux: tuple[int, ...], num_layers: int) -> tuple[int, ...]:
    """Validate hidden_states indices (0..L, negatives counted from the end) -> 0..L."""
    out = []
    for index in aux:
        if not -(num_layers + 1) <= index <= num_layers:
            raise ValueError(
                f"--aux-layers index {index} is outside hidden_states 0..{num_layers} of this "
                f"{num_layers}-layer target"
            )
        out.append(index % (num_layers + 1))
    return tuple(out)


def check_layout(outdir: Path, part: int | None) -> None:
    """A folder holds either one run's data or a split run's (worker manifests + a merge)."""
    if part is None and any(outdir.glob("manifest-part*.json")):
        raise ValueError(
            f"--outdir {outdir} was written by eagle.ge_data.allocation (manifest-part*.json); "
            "resume it with eagle.ge_data.allocation, or use another --outdir"
        )


def chat_target(target: Any, tokenizer: Any, template: Any) -> ChatTarget:
    from eagle.model.ea_model import collect_eos_ids

    eos = frozenset(collect_eos_ids(target.model, tokenizer))
    if not eos:
        raise ValueError("the target defines no end-of-sequence id; regeneration needs one")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    return ChatTarget(target, tokenizer, template, eos, int(pad))


def run_regeneration(
    args: argparse.Namespace, chat: ChatTarget, conversations: list[Conversation]
) -> list[Conversation]:
    """Regenerate (resumably) and return the regenerated conversations in selection order."""
    output = regen_output(args)
    with tqdm(total=len(conversations), desc="regenerate", unit="conv", disable=args.quiet) as bar:
        stats = regenerate(chat, conversations, output, regen_settings(args), progress=bar)
    logger.info("%s -> %s", stats.summary(), output)
    _, regenerated = read_regenerated(output)
    return [regenerated[c.id] for c in conversations if c.id in regenerated]


def answers_in_one_pass(args: argparse.Namespace) -> bool:
    """Regenerated first turns (or, with ``--answer-last-turn``, last turns), answered greedily,
    are stored as they are decoded (`eagle.ge_data.onpolicy`): no second forward over the
    conversation. Answers the regenerated file already holds (an earlier ``--regen-only`` run,
    another folder's, a restored campaign file) are captured as they are; only the missing ones
    are decoded."""
    if args.regen_temperature > 0.0 or args.regen_only:
        return False
    if args.max_turns != 1 and not args.answer_last_turn:
        return False
    return args.num_parts is None


def split_answered(
    args: argparse.Namespace, conversations: list[Conversation]
) -> tuple[list[Conversation], list[Conversation]]:
    """(conversations whose answer the regenerated file holds, as answered there; the rest),
    each in selection order."""
    _, written = read_regenerated(regen_output(args))
    answered = [written[c.id] for c in conversations if c.id in written]
    return answered, [c for c in conversations if c.id not in written]


def run_one_pass(
    args: argparse.Namespace,
    chat: ChatTarget,
    conversations: list[Conversation],
    writer: ShardWriter,
    aux: tuple[int, ...] | None,
) -> None:
    """Answer the first (or, with ``--answer-last-turn``, the last) turns and store their
    features in the same pass."""
    from eagle.ge_data.onpolicy import answer_conversations

    capture = CaptureSettings(
        aux_layers=aux,
        feature_dtype=STORAGE_DTYPES[args.feature_dtype],
        target_topk=args.target_topk,
        store_hidden=stores_hidden(args),
    )
    settings = regen_settings(args)
    with tqdm(
        total=len(conversations), desc="answer+capture", unit="conv", disable=args.quiet
    ) as bar:
        turn = args.max_turns if args.answer_last_turn else 1
        stats = answer_conversations(
            chat, conversations, writer, capture, settings, regen_output(args), bar, turn
        )
    logger.info("%s -> %s", stats.summary(), regen_output(args))


def _rendered(
    args: argparse.Namespace,
    tokenizer: Any,
    template: Any,
    conversations: list[Conversation],
    stats: RenderStats,
    bar: Any,
) -> Iterator[RenderedExample]:
    """Render lazily; a conversation skipped by the length policy still advances the bar."""
    for conversation in conversations:
        skipped = sum(stats.skipped.values())
        yield from render_conversations(
            tokenizer, [conversation], template, args.max_len, args.length_policy, stats,
            last_reply_only=args.answer_last_turn,
        )  # fmt: skip
        if sum(stats.skipped.values()) > skipped:
            bar.update(1)


def run_capture(
    args: argparse.Namespace,
    target: Any,
    tokenizer: Any,
    template: Any,
    conversations: list[Conversation],
    writer: ShardWriter,
    aux: tuple[int, ...] | None,
) -> None:
    """Render and capture every conversation not stored yet, through ``writer``."""
    done = set(stored_ids(writer.manifest))
    todo = [c for c in conversations if c.id not in done]
    settings = CaptureSettings(
        aux_layers=aux,
        feature_dtype=STORAGE_DTYPES[args.feature_dtype],
        batch_size=args.batch_size,
        batch_tokens=args.batch_tokens,
        target_topk=args.target_topk,
        store_hidden=stores_hidden(args),
    )
    render_stats = RenderStats()
    with tqdm(total=len(todo), desc="capture", unit="sample", disable=args.quiet) as bar:
        examples = _rendered(args, tokenizer, template, todo, render_stats, bar)
        stats = capture_to_shards(target, examples, writer, settings, progress=bar)
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(render_stats.skipped.items())) or "none"
    logger.info(
        "captured %d samples (%d already stored), %d tokens in %.1f s (%.0f tok/s); "
        "skipped: %s; truncated: %d",
        stats.samples, len(conversations) - len(todo), stats.tokens, stats.seconds,
        stats.tokens_per_second, skipped, render_stats.truncated,
    )  # fmt: skip


def finish(outdir: Path, writer: ShardWriter, args: argparse.Namespace) -> Manifest:
    """Mark the manifest complete and (single runs) write the vocabulary statistics.

    A single run that stored no sample is an error, and its manifest stays incomplete."""
    manifest = writer.manifest
    if args.part is None and not manifest.num_samples:
        raise ValueError(
            f"--outdir {outdir}: no sample was stored, every selected conversation was skipped "
            "(see the 'skipped' counts above: raise --max-len, or use --length-policy truncate)"
        )
    manifest.complete = True
    write_manifest(manifest, part_manifest_name(args.part))
    if args.part is None:
        fingerprint = manifest.target.fingerprint
        counts, argmax = writer.counts, writer.argmax_counts
        write_vocab(outdir, build_vocab(counts, args.draft_vocab_size, fingerprint, argmax))
    size = sum((outdir / name).stat().st_size for name in manifest.shard_files)
    logger.info(
        "%s: %d samples, %d tokens (%d loss tokens) in %d shards, %.0f bytes/token on disk",
        outdir, manifest.num_samples, manifest.num_tokens, manifest.num_loss_tokens,
        len(manifest.shards), size / max(manifest.num_tokens, 1),
    )  # fmt: skip
    return manifest


def run(args: argparse.Namespace) -> Manifest | None:
    """All stages for validated ``args``; returns the final manifest (None with --regen-only)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    outdir = Path(args.outdir)
    check_layout(outdir, args.part)
    conversations = load_conversations(args)
    target, tokenizer = load_target(args)
    template = resolve_template(args.template, tokenizer)
    aux = None
    if "eagle3" in args.variant_list:
        aux = check_aux_layers(args.aux or default_aux_layers(target.num_layers), target.num_layers)
    info = target_info(target, args.base_model_path)
    check_target_topk(args.target_topk, info["vocab_size"])
    settings = run_settings(args, info, aux)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest_name = part_manifest_name(args.part)
    manifest = open_manifest(outdir, manifest_name, settings)  # checked before regenerating
    one_pass = args.regenerate and answers_in_one_pass(args)
    if args.regenerate and not one_pass:
        chat = chat_target(target, tokenizer, template)
        conversations = run_regeneration(args, chat, conversations)
        if args.regen_only:
            return None
    manifest.complete = False  # until this run has stored everything it selected
    write_manifest(manifest, manifest_name)
    writer = ShardWriter(manifest, args.part, args.shard_tokens)
    if one_pass:
        answered, missing = split_answered(args, conversations)
        if answered:
            run_capture(args, target, tokenizer, template, answered, writer, aux)
        if missing:
            chat = chat_target(target, tokenizer, template)
            run_one_pass(args, chat, missing, writer, aux)
    else:
        run_capture(args, target, tokenizer, template, conversations, writer, aux)
    return finish(outdir, writer, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(args, parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
