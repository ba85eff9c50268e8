"""``python -m eagle.evaluation.tree_sweep``: measure EAGLE tree settings side by side.

Loads the target and head once, then for every (total_token, depth, top_k) of the grid answers
the first turns of a few benchmark questions (spread over its categories) greedily and reports tokens/s, tau and the speedup
over plain decoding measured in the same run (plain decoding is timed first and again last, and
the mean of both is the baseline, so a drift of the machine shows as a gap between them)::

    python -m eagle.evaluation.tree_sweep --questions 8 --max-new-token 128 \\
        --total-token 8,12,16 --depth 4,5,6 --top-k 3,4 --lookup-tokens 0,10

``--lookup-tokens`` adds drafts from the context (``eagle.model.lookup``) to each tree, one
row per value (0: none), and a row of lookup alone per value above 0; the other lookup
settings come from ``--lookup-min-ngram``/``--lookup-max-ngram``/``--lookup-matches``.

Only a guide for choosing settings: the numbers come from few questions; the evaluation
scripts (``gen_ea_answer`` + ``speed``) give the figures to report.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass

import torch

from eagle.input_checks import check_top_k_fits
from eagle.model.draft import DynamicTree
from eagle.model.generate import GenerationConfig
from eagle.model.loading import (
    LOOKUP_FLAGS,
    add_model_flags,
    checked_lookup,
    checked_model_spec,
    given_lookup_fields,
    load_ea_model,
)


def spread(items: list, count: int) -> list:
    """``count`` items evenly spaced over ``items``, the first included (all when fewer)."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


@dataclass(frozen=True)
class Row:
    label: str
    tokens: int
    steps: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def tau(self) -> float:
        return self.tokens / self.steps


def int_list(text: str, flag: str, low: int = 1) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} takes comma-separated integers") from None
    if not values or min(values) < low:
        raise argparse.ArgumentTypeError(f"{flag} takes integers >= {low}, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eagle.evaluation.tree_sweep", description=__doc__)
    add_model_flags(p, tree=False)  # the tree flags below are lists: the grid
    for flag, (_, text) in LOOKUP_FLAGS.items():
        if flag != "--lookup-max-tokens":  # a list below: part of the grid
            p.add_argument(flag, type=int, default=None, help=f"{text} (lookup rows)")
    p.add_argument(
        "--bench-name", default="mt_bench", help="mt_bench, humaneval, random_words or a path"
    )
    p.add_argument(
        "--questions",
        type=int,
        default=8,
        help="N questions spread evenly over the benchmark, first turns (MT-bench, N=8: one per "
        "category; all of them when N exceeds the benchmark)",
    )
    p.add_argument("--max-new-token", type=int, default=128, help="new tokens per answer")
    p.add_argument("--total-token", default="8,12,16", help="comma-separated tree sizes")
    p.add_argument("--depth", default="4,5,6", help="comma-separated depths")
    p.add_argument("--top-k", default="4", help="comma-separated branchings")
    p.add_argument(
        "--lookup-tokens",
        default="0",
        help="comma-separated most tokens drafted from the context per step; 0 = none (default: 0)",
    )
    return p


def run_all(model, prompts: list[torch.Tensor], config: GenerationConfig, use_draft: bool) -> tuple:
    """Answer every prompt -> (new tokens, target forwards incl. prefills, seconds)."""
    tokens = steps = 0
    start = time.perf_counter()
    for ids in prompts:
        *_, last = model.generate_steps(ids, use_draft=use_draft, config=config)
        tokens, steps = tokens + last.new_tokens, steps + last.steps
    return tokens, max(steps, 1), time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[Row]:
    parser = build_parser()
    args = parser.parse_args(argv)
    grid = {}
    for flag in ("total_token", "depth", "top_k", "lookup_tokens"):
        try:
            low = 0 if flag == "lookup_tokens" else 1
            grid[flag] = int_list(getattr(args, flag), "--" + flag.replace("_", "-"), low)
        except argparse.ArgumentTypeError as err:
            parser.error(str(err))
    fields = given_lookup_fields(args)  # --lookup-max-tokens is the grid's --lookup-tokens
    try:  # checked even when no row uses them
        checked_lookup(fields)
        lookups = {
            t: checked_lookup({**fields, "max_tokens": t}) for t in grid["lookup_tokens"] if t
        }
    except ValueError as error:
        parser.error(str(error))
    if args.questions < 1 or args.max_new_token < 1:
        parser.error("--questions and --max-new-token must be >= 1")
    spec = checked_model_spec(parser, args, tree=False)
    try:
        check_top_k_fits(max(grid["top_k"]), spec.ea_model_path)
    except ValueError as error:
        parser.error(str(error))

    from eagle.benchmarks import load_questions
    from eagle.chat.formatter import ChatFormatter

    model = load_ea_model(spec)
    max_new = args.max_new_token
    chat = ChatFormatter(model.tokenizer)
    questions = spread(load_questions(args.bench_name), args.questions)
    device = model.target.device
    prompts = [
        torch.tensor([chat.prompt_ids([{"role": "user", "content": q.turns[0]}])], device=device)
        for q in questions
    ]
    warm_up, plain = GenerationConfig(max_new_tokens=16), GenerationConfig(max_new_tokens=max_new)
    run_all(model, prompts[:1], warm_up, True)
    run_all(model, prompts[:1], warm_up, False)
    rows = [Row("plain (first)", *run_all(model, prompts, plain, False))]

    def measure(label: str, config: GenerationConfig, use_draft: bool) -> None:
        rows.append(Row(label, *run_all(model, prompts, config, use_draft)))
        print(
            f"{label}: {rows[-1].tokens_per_second:.1f} tok/s, tau {rows[-1].tau:.2f}", flush=True
        )

    for tokens, lookup in lookups.items():
        config = GenerationConfig(max_new_tokens=max_new, lookup=lookup)
        measure(f"lookup alone, lookup_tokens={tokens}", config, False)
    sizes = (grid["total_token"], grid["depth"], grid["top_k"], grid["lookup_tokens"])
    for total, depth, top_k, tokens in itertools.product(*sizes):
        tree = DynamicTree(total_token=total, depth=depth, top_k=top_k)
        label = f"total_token={total} depth={depth} top_k={top_k}"
        label += f" lookup_tokens={tokens}" if tokens else ""
        # the tree and the lookup of these calls (False: none, whatever the model's default)
        config = GenerationConfig(
            max_new_tokens=max_new, tree=tree, lookup=lookups.get(tokens, False)
        )
        measure(label, config, True)
    rows.append(Row("plain (last)", *run_all(model, prompts, plain, False)))
    plain_speed = (rows[0].tokens + rows[-1].tokens) / (rows[0].seconds + rows[-1].seconds)
    print(f"\n{'setting':58s} {'tok/s':>7s} {'tau':>5s} {'speedup':>7s}")
    for row in sorted(rows, key=lambda r: -r.tokens_per_second):
        speedup = row.tokens_per_second / plain_speed
        print(f"{row.label:58s} {row.tokens_per_second:7.1f} {row.tau:5.2f} {speedup:7.2f}x")
    return rows


if __name__ == "__main__":
    main()
