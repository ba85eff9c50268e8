"""Bar charts of a speed report: speedup and τ per category, one bar per method.

matplotlib is imported only when a plot is asked for (``pip install matplotlib``). The figure
is drawn without pyplot, so no global backend is chosen or changed and no display is needed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from eagle.evaluation.metrics import Report, Summary

BAR_GROUP_WIDTH = 0.8
TITLE_CHARS_PER_INCH = 13  # at font size 9, so a long title wraps instead of being cut


def plot_report(report: Report, out: Path, title: str | None = None) -> None:
    """Draw total-ratio speedup and τ per category (plus ``overall``) for every method, under
    ``title`` (what was measured: model, head, tree, dtype, machine)."""
    figure_class = _figure_class()
    groups = dict(report.categories) if len(report.categories) > 1 else {}
    groups["overall"] = report.overall
    methods = [name for name in report.overall if name != report.baseline]
    width = max(6.0, 1.2 * len(groups))
    figure = figure_class(figsize=(width, 7.0))
    speed_axis, tau_axis = figure.subplots(2, 1)
    _bars(speed_axis, groups, methods, "speedup_total")
    speed_axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    speed_axis.set_ylabel(f"speedup over {report.baseline}\n(total tokens / total time)")
    speed_axis.legend()
    _bars(tau_axis, groups, methods, "tau")
    tau_axis.set_ylabel("tau (tokens per target step)")
    if title:
        figure.suptitle(textwrap.fill(title, int(width * TITLE_CHARS_PER_INCH)), fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=150)


def _bars(
    axis: Any, groups: dict[str, dict[str, Summary]], methods: list[str], metric: str
) -> None:
    width = BAR_GROUP_WIDTH / max(len(methods), 1)
    for offset, method in enumerate(methods):
        xs = [i + (offset - (len(methods) - 1) / 2) * width for i in range(len(groups))]
        values = [getattr(summaries[method], metric) for summaries in groups.values()]
        axis.bar(xs, values, width=width, label=method)
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels(list(groups), rotation=30, ha="right")


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from error
    return Figure
