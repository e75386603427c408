"""The evaluation table's content: eval.json rows (dsr / bicubic / hr, and any extra row such as
dsr_base) side by side, rates with their 95% bootstrap interval, and the paired comparisons."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.evaluation import wording
from engine.tips import read_evaluation

ROWS = ("dsr", "bicubic", "hr")
METRICS = ("rank1", "rank5", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "open_set_accuracy",
           "psnr", "ssim")
PERCENT_METRICS = {"rank1", "rank5", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "open_set_accuracy"}


def format_metric(metric: str, value: Any) -> str:
    """A cell: rates as percentages (a value above 1 is already one), PSNR in dB, '-' when absent."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    if metric in PERCENT_METRICS:
        return f"{value * 100 if value <= 1.0 else value:.1f}%"
    if metric == "psnr":
        return f"{value:.2f} dB"
    return f"{value:.4f}"


INTERVAL_METRICS = {"rank1", "rank5", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3"}


def columns(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """(row key, column label): dsr, bicubic, hr, plus the extra rows eval.json holds (dsr_base, ...)."""
    labels = {"dsr": "DSR", "bicubic": "bicubic", "hr": "HR"}
    return [(key, labels.get(key, wording.ROW_LABELS[key][0])) for key in wording.rows_present(evaluation)]


def table_rows(evaluation: dict[str, Any], intervals: bool = True) -> list[tuple[str, ...]]:
    """One row per metric: (metric, one cell per column) formatted for display; a rate with a
    bootstrap interval in eval.json reads ``62.5% [41.2, 80.0]`` (``intervals``: else ``62.5%``)."""
    rows = []
    for metric in METRICS:
        cells = []
        for row, _label in columns(evaluation):
            text = format_metric(metric, (evaluation.get(row) or {}).get(metric))
            bounds = wording.interval_text(wording.row_interval(evaluation, row, metric))
            cells.append(f"{text} {bounds}" if intervals and bounds and text != "-" and metric in INTERVAL_METRICS
                         else text)
        rows.append((metric, *cells))
    return rows


def table_width(rows: list[tuple[str, ...]], padding: int = 1) -> int:
    """The cells a table of ``rows`` needs (each column as wide as its widest cell, plus its padding)."""
    return sum(max(len(row[i]) for row in rows) + 2 * padding for i in range(len(rows[0]))) if rows else 0


def comparison_text(evaluation: dict[str, Any]) -> str:
    """The paired rank-1 comparisons, one a line: ``DSR vs bicubic: +4.6 points [+1.2, +8.0], ...``."""
    return "\n".join(f"{label}: {text}" for label, text in wording.comparison_lines(evaluation))


def load_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """eval.json of a run directory (None when absent; WorkbenchError when unreadable)."""
    return read_evaluation(run_dir)
