"""``python -m eagle.train.curve``: the campaign's learning curve as a table and a plot.

Reads ``eagle/train/campaign/curve.jsonl`` (one line per chunk, written by
``eagle.train.recipe``) and prints a Markdown table of validation figures against training
tokens seen: teacher-forced top-1 per unrolled step after every stable epoch, and, for every
chunk's annealed head, top-1 and end-to-end greedy tau beside the shipped head's. ``--plot``
draws the same as a PNG (matplotlib without pyplot: no display, no global backend).

    python -m eagle.train.curve --plot figs/smollm2-learning-curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eagle.train.recipe import CURVE


def read_curve(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run python -m eagle.train.recipe first")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def points(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stable epoch and per annealed head, in order of tokens seen."""
    rows = []
    for record in records:
        for epoch in record["stable_epochs"]:
            rows.append(
                {"chunk": record["chunk"], "head": "stable", "tokens": epoch["tokens_seen"],
                 "top1": epoch["val_top1"], "tau": None}
            )  # fmt: skip
        annealed = record["annealed"]
        rows.append(
            {"chunk": record["chunk"], "head": "annealed",
             "tokens": record["tokens_seen_before"] + record["train_tokens"],
             "top1": annealed["teacher_forced"]["top1"], "tau": annealed["end_to_end"]["tau"],
             "dtype": record.get("dtype", "float32")}
        )  # fmt: skip
    return rows


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: tokens seen, head, top-1 of steps 0-2, validation tau (shipped head beside),
    with the dtype the chunk was scored in (figures of two dtypes are not comparable)."""
    lines = [
        "| chunk | head | training tokens seen | top-1 step 0 | step 1 | step 2 | tau | dtype |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in points(records):
        top1 = (list(row["top1"]) + [float("nan")] * 3)[:3]
        tau = "" if row["tau"] is None else f"{row['tau']:.2f}"
        lines.append(
            f"| {row['chunk']} | {row['head']} | {row['tokens']:,} | {top1[0]:.3f} | "
            f"{top1[1]:.3f} | {top1[2]:.3f} | {tau} | {row.get('dtype', '')} |"
        )
    shipped = records[-1]["shipped"]
    top1 = shipped["teacher_forced"]["top1"]
    lines.append(
        f"| - | shipped before | - | {top1[0]:.3f} | {top1[1]:.3f} | {top1[2]:.3f} | "
        f"{shipped['end_to_end']['tau']:.2f} | {records[-1].get('dtype', 'float32')} |"
    )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], out: Path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from error
    rows = points(records)
    figure = Figure(figsize=(7.0, 6.0))
    top_axis, tau_axis = figure.subplots(2, 1, sharex=True)
    stable = [r for r in rows if r["head"] == "stable"]
    annealed = [r for r in rows if r["head"] == "annealed"]
    for step in range(3):
        xs = [r["tokens"] for r in stable if len(r["top1"]) > step]
        top_axis.plot(xs, [r["top1"][step] for r in stable if len(r["top1"]) > step],
                      marker="o", label=f"stable, step {step}")  # fmt: skip
        top_axis.scatter([r["tokens"] for r in annealed],
                         [r["top1"][step] for r in annealed], marker="*", s=90)  # fmt: skip
    top_axis.set_ylabel("validation top-1\n(teacher-forced)")
    top_axis.legend(fontsize=8)
    for dtype in dict.fromkeys(r["dtype"] for r in annealed):
        of_dtype = [r for r in annealed if r["dtype"] == dtype]
        tau_axis.plot([r["tokens"] for r in of_dtype], [r["tau"] for r in of_dtype], marker="*",
                      label=f"annealed head, scored in {dtype}")  # fmt: skip
    shipped = records[-1]["shipped"]["end_to_end"]["tau"]
    tau_axis.axhline(shipped, color="grey", linestyle="--",
                     label=f"head shipped before ({records[-1].get('dtype', 'float32')})")  # fmt: skip
    tau_axis.set_ylabel("validation tau\n(greedy, tree 8/4/4)")
    tau_axis.set_xlabel("training tokens seen")
    tau_axis.legend(fontsize=8)
    figure.suptitle("SmolLM2-135M-Instruct EAGLE-3 head: learning curve (2-core CPU)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eagle.train.curve", description=__doc__)
    parser.add_argument("--curve", default=str(CURVE), help="curve.jsonl of the campaign")
    parser.add_argument("--plot", default=None, help="write the curve as a PNG here")
    args = parser.parse_args(argv)
    records = read_curve(Path(args.curve))
    print(table(records))
    if args.plot:
        plot(records, Path(args.plot))
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
