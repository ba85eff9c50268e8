"""``python -m eagle.evaluation.speed``: speedup, τ and tokens/s from answer files.

Compares an EAGLE answer file (and optionally more, ``--extra-answers NAME=FILE``) with a
baseline answer file over the questions they all answered, overall and per category, and
prints a table; ``--json`` writes the same numbers, ``--plot`` draws speedup and τ per category.
Definitions are in ``eagle.evaluation.metrics``. Files whose recorded settings differ in one of
``SHARED_SETTINGS`` (temperature, max new tokens, dtype, device, threads, ...) are refused
unless ``--allow-different-settings`` is given; the settings are printed with the table.
Example::

    python -m eagle.evaluation.speed --ea-answers outputs/mt_bench/m-eagle.jsonl \\
        --baseline-answers outputs/mt_bench/m-baseline.jsonl --bench-name mt_bench \\
        --extra-answers prompt_lookup=outputs/mt_bench/m-hf_prompt_lookup.jsonl \\
        --json outputs/mt_bench/speed.json --plot figs/speed_mt_bench.png
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from eagle.benchmarks import load_questions
from eagle.evaluation.answers import (
    Answer,
    RecordedSettings,
    file_settings,
    read_answers,
    shared_settings,
)
from eagle.evaluation.metrics import QuestionId, Report, Summary, compare

DESCRIPTION = (
    "Speedup, tau and tokens/s of EAGLE (and other) answer files against a baseline answer "
    "file, overall and per category."
)
EAGLE_NAME = "eagle"
BASELINE_NAME = "baseline"
COLUMNS = (
    "method",
    "questions",
    "tokens",
    "time (s)",
    "tokens/s",
    "tau",
    "speedup (total)",
    "speedup (mean/question)",
)


def main(argv: list[str] | None = None) -> Report:
    """Parse ``argv``, compare the answer files, print the table and write the outputs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        paths = answer_paths(args)
        files = {name: read_answers(path) for name, path in paths.items()}
        settings = {name: file_settings(paths[name], files[name]) for name in files}
        shared = {} if args.allow_different_settings else shared_settings(settings)
        categories = load_categories(args.bench_name)
        report = compare(files, BASELINE_NAME, categories)
    except ValueError as error:
        parser.error(str(error))
    print(format_report(report, paths, files, settings, shared))
    if args.json:
        write_json(report, paths, settings, Path(args.json))
        print(f"JSON written to {args.json}")
    if args.plot:
        from eagle.evaluation.plot import plot_report

        title = args.plot_title if args.plot_title is not None else plot_title(settings)
        plot_report(report, Path(args.plot), title)
        print(f"plot written to {args.plot}")
    return report


def build_parser() -> argparse.ArgumentParser:
    """The ``speed`` command line."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--ea-answers", required=True, help="answer file of EAGLE")
    parser.add_argument("--baseline-answers", required=True, help="answer file of the baseline")
    parser.add_argument(
        "--extra-answers",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=FILE",
        help="more answer files to compare with the baseline (e.g. hf_generate=FILE)",
    )
    parser.add_argument(
        "--bench-name",
        help="question set giving the categories: mt_bench, humaneval, random_words or a question.jsonl "
        "path (default: one category 'all')",
    )
    parser.add_argument(
        "--allow-different-settings",
        action="store_true",
        help="compare files even when their recorded temperature, max new tokens, dtype, "
        "device, threads, ... differ (default: refuse)",
    )
    parser.add_argument("--json", help="write the report as JSON to this path")
    parser.add_argument("--plot", help="draw speedup and tau per category to this image path")
    parser.add_argument(
        "--plot-title",
        help="the plot's title (default: model, head, tree, dtype, threads and machine from the "
        "answer files' recorded settings; '' for none)",
    )
    return parser


def plot_title(settings: dict[str, RecordedSettings | None]) -> str:
    """Model, head, tree, dtype, threads and machine of the answer files, from their recorded
    settings (what is not recorded is left out)."""
    recorded = [s for s in settings.values() if s]
    if not recorded:
        return ""
    first = recorded[0]
    parts = [str(first.get("base_model_path") or "")]
    heads = {Path(str(s["ea_model_path"])).name for s in recorded if s.get("ea_model_path")}
    parts += [f"head {name}" for name in sorted(heads)]
    trees = {
        "/".join(str(s["tree"].get(k)) for k in ("total_token", "depth", "top_k"))
        for s in recorded
        if isinstance(s.get("tree"), dict) and "total_token" in s["tree"]
    }
    parts += [f"tree {tree}" for tree in sorted(trees)]
    parts.append(str(first.get("dtype") or ""))
    if first.get("threads"):
        parts.append(f"{first['threads']} threads")
    parts.append(str(first.get("machine") or ""))
    return " | ".join(part for part in parts if part)


def answer_paths(args: argparse.Namespace) -> dict[str, Path]:
    """``{name: path}`` of every answer file, EAGLE first; raises ValueError for bad extras."""
    paths = {EAGLE_NAME: Path(args.ea_answers), BASELINE_NAME: Path(args.baseline_answers)}
    for item in args.extra_answers:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--extra-answers expects NAME=FILE, got {item!r}")
        if name in paths:
            raise ValueError(f"--extra-answers name {name!r} is already used; pick another")
        paths[name] = Path(path)
    return paths


def load_categories(bench: str | None) -> dict[QuestionId, str] | None:
    """Question id -> category of a question set, or None without one."""
    if bench is None:
        return None
    return {q.question_id: q.category for q in load_questions(bench)}


def format_report(
    report: Report,
    paths: dict[str, Path],
    files: dict[str, dict[QuestionId, Answer]],
    settings: dict[str, RecordedSettings | None] | None = None,
    shared: RecordedSettings | None = None,
) -> str:
    """The readable report: files and settings, coverage warnings, overall and per-category
    tables. ``settings`` are each file's recorded settings, ``shared`` those all files share."""
    settings = settings or {}
    shared = shared or {}
    lines = [f"{name}: {path} (model_id {_model_ids(files[name])})" for name, path in paths.items()]
    if shared:
        lines.append("settings: " + _format_settings(shared))
    for name, recorded in settings.items():
        own = {k: v for k, v in (recorded or {}).items() if k not in shared and k != "method"}
        if recorded is None:
            lines.append(f"{name} settings: not recorded in the file")
        elif own:
            lines.append(f"{name} settings: " + _format_settings(own))
    lines += [
        f"WARNING: {name} lacks {len(ids)} question(s) others answered: {_shorten(ids)}"
        for name, ids in report.missing.items()
    ]
    base_tau = report.overall[report.baseline].tau
    if abs(base_tau - 1.0) > 1e-9:
        lines.append(f"WARNING: the baseline's tau is {base_tau:.3f}, not 1: is it plain decoding?")
    lines += ["", f"Overall ({report.questions} questions answered by every file)"]
    lines += format_table(COLUMNS, [_row(n, s) for n, s in report.overall.items()])
    sampled = _sampled(settings)
    for name, agree in report.agreement.items():
        lines.append(
            f"{name} vs {report.baseline}: identical text in {agree.same_text}/{agree.turns} "
            f"turns, same token count in {agree.same_tokens}/{agree.turns}, "
            f"{100 * agree.prefix_share:.1f}% of the baseline's characters reproduced before "
            "the first difference"
            + (f" (sampled at temperature {sampled:g}: not expected to match)" if sampled else "")
        )
    if len(report.categories) > 1:
        rows = [
            [category, *_row(name, summary)]
            for category, summaries in report.categories.items()
            for name, summary in summaries.items()
        ]
        lines += ["", "Per category"]
        lines += format_table(("category", *COLUMNS), rows)
    return "\n".join(lines)


def format_table(headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    """Left-aligned text columns separated by two spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    render = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    header = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    return [header, "-" * len(header), *render]


def write_json(
    report: Report, paths: dict[str, Path], settings: dict[str, RecordedSettings | None], out: Path
) -> None:
    """Write the report, with the compared files, their settings and the metric definitions,
    as JSON."""
    data = {
        "files": {name: str(path) for name, path in paths.items()},
        "settings": settings,
        "definitions": {
            "tokens_per_s": "sum of new_tokens / sum of wall_time",
            "tau": "sum of new_tokens / sum of idxs (target forward passes)",
            "speedup_total": "tokens_per_s of the method / tokens_per_s of the baseline",
            "speedup_mean": "mean over questions of the per-question tokens/s ratio",
        },
        **asdict(report),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _row(name: str, summary: Summary) -> list[str]:
    return [
        name,
        str(summary.questions),
        str(summary.tokens),
        f"{summary.seconds:.2f}",
        f"{summary.tokens_per_s:.2f}",
        f"{summary.tau:.2f}",
        f"{summary.speedup_total:.2f}x",
        f"{summary.speedup_mean:.2f}x",
    ]


def _format_settings(settings: RecordedSettings) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items())


def _sampled(settings: dict[str, RecordedSettings | None]) -> float:
    """The highest recorded sampling temperature (0.0 when every file is greedy or silent)."""
    temperatures = [s.get("temperature", 0.0) for s in settings.values() if s is not None]
    highest = max(temperatures, default=0.0)
    if highest <= 0.0:
        return 0.0
    from eagle.model.verify import GREEDY_TEMPERATURE  # imports torch: only when needed

    return highest if highest > GREEDY_TEMPERATURE else 0.0


def _model_ids(answers: dict[QuestionId, Answer]) -> str:
    return ", ".join(sorted({a.model_id for a in answers.values()}))


def _shorten(ids: list[QuestionId], limit: int = 10) -> str:
    shown = ", ".join(str(q) for q in ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


if __name__ == "__main__":
    main()
