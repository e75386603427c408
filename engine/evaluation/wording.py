"""Plain-text wording of eval.json figures, shared by the CLI table, the app and the report.

A rate with its interval reads ``42.6% [31.0, 55.1]``; a paired difference reads
``+4.6 points [1.2, 8.0], McNemar p=0.031`` or ``+0.9 points [-2.1, 3.8], not significant
(McNemar p=0.42)``. Strings only: no tensor maths here.
"""

from __future__ import annotations

import math
from typing import Any

# row key -> (short label, what scored it); the order is the display order
ROW_LABELS = {
    "dsr": ("DSR", "VLR -> DSR -> recogniser fine-tuned on DSR outputs (or the one given with --edgeface)"),
    "dsr_base": ("DSR + base", "VLR -> DSR -> base recogniser (not fine-tuned)"),
    "bicubic": ("bicubic", "VLR -> bicubic -> recogniser fine-tuned on bicubic images when given "
                           "(--edgeface-bicubic), else the DSR row's recogniser"),
    "bicubic_base": ("bicubic + base", "VLR -> bicubic -> base recogniser (not fine-tuned)"),
    "hr": ("HR (upper bound)", "HR probe -> the DSR row's recogniser"),
}
ROW_ORDER = tuple(ROW_LABELS)
COMPARISON_ORDER = ("dsr_vs_bicubic", "dsr_vs_bicubic_base", "dsr_finetuned_vs_base", "bicubic_finetuned_vs_base",
                    "dsr_vs_bicubic_base_recogniser")   # eval.json may store them sorted by name


def rows_present(doc: dict[str, Any]) -> list[str]:
    """Row keys of an eval.json document that hold results, in display order (headline rows always)."""
    extra = [key for key in ROW_ORDER if key not in ("dsr", "bicubic", "hr") and isinstance(doc.get(key), dict)]
    return [key for key in ROW_ORDER if key in ("dsr", "bicubic", "hr") or key in extra]


def finite(value: Any) -> bool:
    """A real, finite number (not a bool, NaN or inf): what a stored metric must be to be shown or compared."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def percent(value: Any, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%" if finite(value) else "-"


def interval_text(interval: Any) -> str:
    """``[31.0, 55.1]`` (percentage points) for a [lo, hi] fraction pair, '' when absent."""
    if not (isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(finite, interval))):
        return ""
    return f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def rate_with_interval(value: Any, interval: Any) -> str:
    text = percent(value)
    bounds = interval_text(interval)
    return f"{text} {bounds}" if bounds and text != "-" else text


def row_interval(doc: dict[str, Any], row: str, metric: str) -> Any:
    """The [lo, hi] of ``row``'s ``metric`` in an eval.json read by ``engine.runs.records.read_evaluation``."""
    return doc.get("intervals", {}).get("rows", {}).get(row, {}).get(metric)


def p_text(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def comparison_text(comparison: dict[str, Any]) -> str:
    """``+4.6 points [1.2, 8.0], McNemar p=0.031`` or ``..., not significant (McNemar p=0.42)``."""
    diff = comparison.get("difference")
    if not finite(diff):
        return "-"
    text = f"{100 * diff:+.1f} points"
    bounds = interval_text(comparison.get("interval"))
    if bounds:
        lo, hi = comparison["interval"]
        text += f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    mcnemar = comparison.get("mcnemar", {})
    p = mcnemar.get("p")
    if finite(p):
        if comparison.get("significant"):
            text += f", significant (McNemar p={p_text(p)})"
        else:
            text += f", not significant (McNemar p={p_text(p)})"
    return text


def comparison_lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) per paired comparison of an eval.json document, in display order."""
    comparisons = doc.get("comparisons", {})
    names = sorted(comparisons, key=lambda n: COMPARISON_ORDER.index(n) if n in COMPARISON_ORDER else len(COMPARISON_ORDER))
    return [(comparison_label(name, comparisons[name]), comparison_text(comparisons[name])) for name in names]


def comparison_label(name: str, body: dict[str, Any]) -> str:
    """``DSR vs bicubic`` from the compared rows' labels (the stored name when they are unknown)."""
    a, b = body.get("a"), body.get("b")
    if a in ROW_LABELS and b in ROW_LABELS:
        return f"{ROW_LABELS[a][0]} vs {ROW_LABELS[b][0]}"
    return name


def camera_protocol_text(camera) -> str:
    """eval.json's ``protocol.camera`` in words: 'unseen camera (motion=1:3,...); trained through blur=...';
    '' for an eval.json from before the camera protocols."""
    if not isinstance(camera, dict) or not isinstance(camera.get("protocol"), str):
        return ""
    name = camera["protocol"]
    spec = camera.get("probes") if name == "unseen camera" else camera.get("dataset") if name == "same camera" else None
    trained = f"; trained through {camera['training']}" if isinstance(camera.get("training"), str) else ""
    return name + (f" ({spec})" if isinstance(spec, str) else "") + trained
