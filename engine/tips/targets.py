"""The guide's "Validation Metrics" targets, checked against a run's metric history.

Which value is compared: DSR metrics use the latest val epoch of stage ``dsr`` (what the model is
now); "Stage 1/2 val accuracy" use the best val top-1 of the stage; "Final accuracy" uses the
DSR row's rank-1 of eval.json when given, else the last val top-1 of stage 2. ``Target.label``
says which (``DSR val PSNR (last epoch: 12)``, ``Stage 1 val accuracy (best epoch: 7)``), since the
runs table shows the best val PSNR. Fractions stay fractions (unit "%" tells a front end to show
them as percentages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.presets import Preset
from engine.tips.history import Point, eval_rank1, series
from engine.tips.thresholds import target_values


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None       # None: no data yet
    target: float
    comparison: str           # ">" (value must exceed target) or "<" (value must stay below it)
    met: bool
    gap: float | None         # distance still to go: > 0 missed by that much, <= 0 met with that margin
    unit: str = ""            # "dB", "%" (a fraction shown as a percentage) or ""
    which: str = ""           # "last" or "best" epoch of the stage's val metrics ("" for eval.json's rank-1)
    epoch: int | None = None  # the epoch the value is from

    @property
    def label(self) -> str:
        """The name with the epoch its value is from: ``DSR val PSNR (last epoch: 12)``."""
        return f"{self.name} ({self.which} epoch: {self.epoch})" if self.which and self.epoch is not None else self.name


# (target key, shown name, stage, metric, comparison, which value, unit)
_SPECS = (
    ("psnr", "DSR val PSNR", "dsr", "psnr", ">", "last", "dB"),
    ("identity", "DSR val identity loss", "dsr", "identity", "<", "last", ""),
    ("feature_match", "DSR val feature-matching loss", "dsr", "feature_match", "<", "last", ""),
    ("l1", "DSR val L1 loss", "dsr", "l1", "<", "last", ""),
    ("stage1", "Stage 1 val accuracy", "stage1", "top1", ">", "best", "%"),
    ("stage2", "Stage 2 val accuracy", "stage2", "top1", ">", "best", "%"),
    ("final", "Final accuracy", "stage2", "top1", ">", "last", "%"),
)


def check_targets(history: list[dict[str, Any]], preset: Preset, evaluation: dict | None = None) -> list[Target]:
    """Every target of the preset's VLR size, met or not, in the guide's order."""
    goals = target_values(*preset.vlr_size)
    targets = []
    for key, name, stage, metric, comparison, which, unit in _SPECS:
        point = None
        if key == "final" and eval_rank1(evaluation, "dsr") is not None:
            point, name, which = Point(0, eval_rank1(evaluation, "dsr")), "Final accuracy (eval rank-1)", ""
        else:
            points = [p for p in series(history, stage, "val", metric) if p.finite]
            if points:
                point = points[-1] if which == "last" else (max if comparison == ">" else min)(
                    points, key=lambda p: p.value)
        targets.append(_target(name, point, goals[key], comparison, unit, which))
    return targets


def _target(name: str, point: Point | None, goal: float, comparison: str, unit: str, which: str) -> Target:
    if point is None:
        return Target(name, None, goal, comparison, False, None, unit)
    value = point.value
    gap = goal - value if comparison == ">" else value - goal
    met = value > goal if comparison == ">" else value < goal
    return Target(name, value, goal, comparison, met, gap, unit, which, point.epoch if which else None)
