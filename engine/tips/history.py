"""Reading a metric history (metrics.jsonl records) as per-epoch series.

A record is ``{"job", "stage", "epoch", "step", "split", <metric>: value, ...}``; the workbench stores
non-finite values as null, other writers as NaN or Infinity (Python's json): either way a loss key that
holds no finite number means the loss was NaN or infinite. A record
``{"split": "error", "error": "out of memory ..."}`` (or ``{"event": "oom"}``) marks an OOM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

LOSS_KEYS = ("loss", "l1", "perceptual", "identity", "feature_match", "tv")
DSR_STAGES = ("dsr",)
FINETUNE_STAGES = ("stage1", "stage2")
TRAINING_STAGES = ("dsr", "pretrain", "stage1", "stage2")


@dataclass(frozen=True)
class Point:
    epoch: int
    value: float | None  # None: non-finite (stored as null)

    @property
    def finite(self) -> bool:
        return self.value is not None and math.isfinite(self.value)


def stages(history: Iterable[dict[str, Any]]) -> list[str]:
    """Stages in the order they first appear."""
    seen: list[str] = []
    for record in history:
        stage = record.get("stage")
        if isinstance(stage, str) and stage not in seen:
            seen.append(stage)
    return seen


def series(history: Iterable[dict[str, Any]], stage: str, split: str, metric: str) -> list[Point]:
    """One value per epoch (the last record of an epoch wins, e.g. after a resume), by epoch."""
    by_epoch: dict[int, float | None] = {}
    for index, record in enumerate(history):
        if record.get("stage") != stage or record.get("split") != split or metric not in record:
            continue
        epoch = record.get("epoch")
        epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else index
        by_epoch[epoch] = _as_float(record[metric])
    return [Point(epoch, by_epoch[epoch]) for epoch in sorted(by_epoch)]


def most_epochs(history: Iterable[dict[str, Any]]) -> tuple[int, str | None]:
    """(number of epochs with train or val metrics, stage) of the stage that has the most; (0, None) if none."""
    per_stage: dict[str, set[int]] = {}
    for record in history:
        epoch, stage = record.get("epoch"), record.get("stage")
        if record.get("split") in ("train", "val") and isinstance(stage, str) and isinstance(epoch, int):
            per_stage.setdefault(stage, set()).add(epoch)
    if not per_stage:
        return 0, None
    stage = max(per_stage, key=lambda s: len(per_stage[s]))
    return len(per_stage[stage]), stage


def non_finite(history: Iterable[dict[str, Any]]) -> list[tuple[str, str, Any, str]]:
    """``(stage, split, epoch, key)`` of every loss value that is null, NaN or infinite."""
    found = []
    for record in history:
        for key in LOSS_KEYS:
            if key in record and _as_float(record[key]) is None:
                found.append((str(record.get("stage", "?")), str(record.get("split", "?")),
                              record.get("epoch", "?"), key))
    return found


def oom_records(history: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records that report running out of memory."""
    return [r for r in history
            if r.get("event") == "oom" or "out of memory" in str(r.get("error", "")).lower()]


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def eval_rank1(evaluation: dict[str, Any] | None, row: str) -> float | None:
    """Rank-1 of ``row`` ("dsr", "bicubic" or "hr") in an eval.json mapping, as a fraction.

    Values above 1 are read as percentages.
    """
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get(row), dict):
        return None
    value = _as_float(evaluation[row].get("rank1"))
    if value is None:
        return None
    return value / 100.0 if value > 1.0 else value
