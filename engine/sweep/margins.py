"""Each pipeline trial against the fair baseline: DSR's rank-1 beside the best bicubic row's, each with its 95%
interval, and the paired margin with its interval and McNemar p (one split), or the fold means, spread and the
folds where the margin is significant (``--folds``). The table a lever study is read by (``report STUDY``).
The evaluation is found and the best bicubic row chosen exactly as the objective does (engine.sweep.objective)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.evaluation.wording import ROW_LABELS, finite, interval_text, p_text, row_interval
from engine.runs.records import read_evaluation, read_fold_evaluation
from engine.runs.run_dir import RunDir
from engine.sweep.objective import best_bicubic, evaluation_camera, rows_of, run_evaluation

HEADER = ["trial", "tried", "DSR rank-1", "best bicubic rank-1", "margin (points)", "significant", "PSNR DSR / bicubic",
          "wall"]


def margin_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per complete trial whose run has an evaluation with DSR and a bicubic row."""
    table = []
    for row in rows:
        if row["state"] != "complete" or not row["run_dir"]:
            continue
        run_dir = Path(row["run_dir"])
        try:
            evaluation = run_evaluation(run_dir)
            cells, camera = _cells(*evaluation), evaluation_camera(*evaluation)
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            cells = None          # a damaged evaluation file: the trial has no row here (its value is in Trials)
        if cells:
            seconds = RunDir(run_dir).read_summary().get("total_seconds")
            wall = f"{seconds / 60:.1f} min" if finite(seconds) else "-"
            tried = (row["label"] or "sampler") + (f" [{camera}]" if camera else "")   # the protocol it was measured on
            table.append([str(row["number"]), tried, *cells, wall])
    return table


def _cells(doc: dict[str, Any], folds: bool) -> list[str] | None:
    if not folds:
        margin = paired_margin(doc)
        if margin is None:
            return None
        best, p = margin["best"], margin["p"]
        return [_rate(margin["dsr"], row_interval(doc, "dsr", "rank1")),
                f"{_rate(margin['bicubic'], row_interval(doc, best, 'rank1'))} ({best})",
                points_text(margin["difference"], margin["interval"]),
                ("yes" if margin["significant"] else "no") + (f", McNemar p = {p_text(p)}" if finite(p) else ""),
                _psnr(*margin["psnr"])]
    rows = rows_of(doc, folds)
    best = best_bicubic(rows)
    if best is None or not finite(rows.get("dsr", {}).get("rank1")):
        return None
    comparison = doc.get("comparisons", {}).get(f"dsr_vs_{best}", {})
    spread = {row: doc["rows"][row]["rank1"] for row in ("dsr", best)}
    difference = comparison.get("difference", {})
    return [_spread(spread["dsr"]), f"{_spread(spread[best])} ({best})", _spread(difference, points=True),
            f"{comparison.get('significant_folds', '?')} of {difference.get('n', '?')} folds",
            _psnr(rows["dsr"].get("psnr"), rows[best].get("psnr"))]


def _rate(value: float, interval) -> str:
    bounds = interval_text(interval)
    return f"{value * 100:.1f}" + (f" {bounds}" if bounds else "")


def points_text(value, interval) -> str:
    """``+4.6 [+1.2, +8.0]``: a rank-1 difference in points with its 95% interval."""
    if not finite(value):
        return "-"
    signed = f" [{interval[0] * 100:+.1f}, {interval[1] * 100:+.1f}]" if interval_text(interval) else ""
    return f"{value * 100:+.1f}" + signed


def _spread(stat: dict[str, Any], points: bool = False) -> str:
    mean, std = stat.get("mean"), stat.get("std")
    if not finite(mean):
        return "-"
    shown = f"{mean * 100:+.1f}" if points else f"{mean * 100:.1f}"
    return shown + (f" ± {std * 100:.1f}" if finite(std) else "") + " (mean ± sd)"


def _psnr(a, b) -> str:
    return f"{a:.2f} / {b:.2f} dB" if finite(a) and finite(b) else "-"


def paired_margin(doc: dict[str, Any]) -> dict[str, Any] | None:
    """DSR against the best bicubic row of one evaluation (an eval.json, not a fold aggregate): their rank-1, the
    paired difference with its 95% interval, McNemar p and whether it is significant; None without both rows."""
    rows = rows_of(doc, False)
    best = best_bicubic(rows)
    if best is None or not finite(rows.get("dsr", {}).get("rank1")):
        return None
    comparison = doc.get("comparisons", {}).get(f"dsr_vs_{best}", {})
    return {"best": best, "dsr": rows["dsr"]["rank1"], "bicubic": rows[best]["rank1"],
            "difference": comparison.get("difference"), "interval": comparison.get("interval"),
            "p": comparison.get("mcnemar", {}).get("p"), "significant": bool(comparison.get("significant")),
            "psnr": (rows["dsr"].get("psnr"), rows[best].get("psnr"))}


def verdict(doc: dict[str, Any], folds: bool) -> str | None:
    """One line: did DSR beat the best bicubic row beyond noise (McNemar p < 0.05 on the same probes; with folds,
    in how many folds)? None when the evaluation has no DSR row or no bicubic row."""
    rows = rows_of(doc, folds)
    best = best_bicubic(rows)
    if best is None or not finite(rows.get("dsr", {}).get("rank1")):
        return None
    named = f"the best bicubic row ({ROW_LABELS.get(best, (best,))[0]})"
    comparison = doc.get("comparisons", {}).get(f"dsr_vs_{best}", {})
    if folds:
        difference = comparison.get("difference", {})
        significant, n = comparison.get("significant_folds"), difference.get("n")
        margin = f"margin {_spread(difference, points=True)}"
        if not finite(difference.get("mean")) or significant is None:
            return f"verdict: no paired comparison of DSR with {named} in the folds"
        if significant == n and finite(difference.get("min")) and difference["min"] > 0:
            return f"verdict: DSR beat {named} beyond noise in all {n} folds ({margin} points)"
        worse = finite(difference.get("max")) and difference["max"] < 0
        return (f"verdict: DSR did not beat {named} beyond noise in every fold: {'below it in every fold, ' if worse else ''}"
                f"significant (McNemar p < 0.05) in {significant} of {n} folds ({margin} points)")
    margin = paired_margin(doc)
    value, p = margin["difference"], margin["p"]
    if not finite(value):
        return f"verdict: no paired comparison of DSR with {named} (run with intervals: --bootstrap > 0)"
    figures = f"{points_text(value, margin['interval'])} points" + (f", McNemar p = {p_text(p)}" if finite(p) else "")
    if margin["significant"] and value > 0:
        return f"verdict: DSR beat {named} beyond noise: {figures}"
    if margin["significant"]:
        return f"verdict: DSR is below {named} beyond noise: {figures}"
    return f"verdict: DSR did not beat {named} beyond noise: {figures}"


def pipeline_verdict(summary: dict[str, Any]) -> str | None:
    """The verdict a finished pipeline ends with, from the evaluation its summary names (fold aggregate first)."""
    folds = summary.get("eval_folds_json")
    named = folds or summary.get("eval_json")
    if not isinstance(named, str) or not Path(named).is_file():
        return None
    doc = (read_fold_evaluation if folds else read_evaluation)(Path(named))
    return verdict(doc, bool(folds)) if doc else None
