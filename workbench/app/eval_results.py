"""The evaluation table's content: eval.json rows (dsr / bicubic / hr) side by side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


def table_rows(evaluation: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per metric: (metric, dsr, bicubic, hr) formatted for display."""
    rows = []
    for metric in METRICS:
        cells = [format_metric(metric, (evaluation.get(row) or {}).get(metric)) for row in ROWS]
        rows.append((metric, *cells))
    return rows


def load_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """eval.json of a run directory (None when absent; WorkbenchError when unreadable)."""
    return read_evaluation(run_dir)
