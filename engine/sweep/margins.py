"""Each pipeline trial against the fair baseline: DSR's rank-1 beside the best bicubic row's, each with its 95%
interval, and the paired margin with its interval and McNemar p (one split), or the fold means, spread and the
folds where the margin is significant (``--folds``). The table a lever study is read by (``report STUDY``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.runs.records import read_evaluation, read_json_object
from engine.runs.run_dir import RunDir, linked_file
from engine.sweep.objective import BICUBIC_ROWS
from engine.errors import WorkbenchError

HEADER = ["trial", "tried", "DSR rank-1", "best bicubic rank-1", "margin (points)", "significant", "PSNR DSR / bicubic",
          "wall"]


def margin_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per complete trial whose run has an evaluation with a bicubic row."""
    table = []
    for row in rows:
        if row["state"] != "complete" or not row["run_dir"]:
            continue
        run_dir = Path(row["run_dir"])
        summary = RunDir(run_dir).read_summary()
        try:
            cells = _folds_cells(run_dir, summary) or _split_cells(run_dir, summary)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            cells = None          # a damaged evaluation file: the trial has no row here (its value is in Trials)
        if cells:
            seconds = summary.get("total_seconds")
            wall = f"{seconds / 60:.1f} min" if _number(seconds) else "-"
            table.append([str(row["number"]), row["label"] or "sampler", *cells, wall])
    return table


def _split_cells(run_dir: Path, summary: dict[str, Any]) -> list[str] | None:
    path = next((p for p in (run_dir / "eval.json", linked_file(run_dir, summary.get("eval_json")))
                 if p is not None and p.is_file()), None)
    doc = read_evaluation(path) if path is not None else None
    if not doc or "dsr" not in doc:
        return None
    present = [r for r in BICUBIC_ROWS if _number(doc.get(r, {}).get("rank1"))]
    if not present or not _number(doc["dsr"].get("rank1")):
        return None
    best = max(present, key=lambda r: doc[r]["rank1"])
    intervals = (doc.get("intervals") or {}).get("rows") or {}
    comparison = (doc.get("comparisons") or {}).get(f"dsr_vs_{best}") or {}
    low_high = comparison.get("interval") or [None, None]
    p = (comparison.get("mcnemar") or {}).get("p")
    return [_rate(doc["dsr"]["rank1"], intervals.get("dsr", {}).get("rank1")),
            f"{_rate(doc[best]['rank1'], intervals.get(best, {}).get('rank1'))} ({best})",
            _points(comparison.get("difference"), low_high),
            ("yes" if comparison.get("significant") else "no") + (f", McNemar p = {p:.2g}" if _number(p) else ""),
            _psnr(doc["dsr"].get("psnr"), doc[best].get("psnr"))]


def _folds_cells(run_dir: Path, summary: dict[str, Any]) -> list[str] | None:
    path = linked_file(run_dir, summary.get("eval_folds_json"))
    if path is None or not path.is_file():
        return None
    try:
        doc = read_json_object(path, "")
    except WorkbenchError:
        return None
    means = {row: (body.get("rank1") or {}) for row, body in (doc.get("rows") or {}).items() if isinstance(body, dict)}
    present = [r for r in BICUBIC_ROWS if _number(means.get(r, {}).get("mean"))]
    if "dsr" not in means or not present:
        return None
    best = max(present, key=lambda r: means[r]["mean"])
    comparison = (doc.get("comparisons") or {}).get(f"dsr_vs_{best}") or {}
    difference = comparison.get("difference") or {}
    psnr = {row: ((doc.get("rows") or {}).get(row, {}).get("psnr") or {}).get("mean") for row in ("dsr", best)}
    return [_spread(means["dsr"]), f"{_spread(means[best])} ({best})", _spread(difference, points=True),
            f"{comparison.get('significant_folds', '?')} of {difference.get('n', '?')} folds",
            _psnr(psnr["dsr"], psnr[best])]


def _rate(value: float, interval) -> str:
    shown = f"{value * 100:.1f}"
    return shown + (f" [{interval[0] * 100:.1f}, {interval[1] * 100:.1f}]" if _pair(interval) else "")


def _points(value, interval) -> str:
    if not _number(value):
        return "-"
    return f"{value * 100:+.1f}" + (f" [{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}]" if _pair(interval) else "")


def _spread(stat: dict[str, Any], points: bool = False) -> str:
    mean, std = stat.get("mean"), stat.get("std")
    if not _number(mean):
        return "-"
    shown = f"{mean * 100:+.1f}" if points else f"{mean * 100:.1f}"
    return shown + (f" ± {std * 100:.1f}" if _number(std) else "") + " (mean ± sd)"


def _psnr(a, b) -> str:
    return f"{a:.2f} / {b:.2f} dB" if _number(a) and _number(b) else "-"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(interval) -> bool:
    return isinstance(interval, (list, tuple)) and len(interval) == 2 and all(_number(v) for v in interval)
