"""Bounded metric history for the charts: one ``deque(maxlen=...)`` per (stage, split, metric).

Jobs emit ``Metrics`` per epoch and ``Progress`` every few steps; the buffers keep the last
``maxlen`` points of each series, a ``version`` counter of any change, and ``stamp(keys)``, which
changes only when one of the given series does: a chart redraws for its own series only (the live
loss of every progress event must not redraw the fine-tuning charts).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable

Point = tuple[float, float]
LIVE_SPLIT = "live"   # the running training loss from Progress events, x = fractional epoch


class MetricBuffers:
    def __init__(self, maxlen: int = 4000) -> None:
        self.maxlen = maxlen
        self.version = 0
        self._clears = 0
        self._series: dict[tuple[str, str, str], deque[Point]] = {}
        self._versions: dict[tuple[str, str, str], int] = {}

    def add(self, stage: str, split: str, x: float, values: dict[str, float | None]) -> None:
        for name, value in values.items():
            if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            key = (stage, split, name)
            if key not in self._series:
                self._series[key] = deque(maxlen=self.maxlen)
            self._series[key].append((float(x), float(value)))
            self._versions[key] = self._versions.get(key, 0) + 1
        self.version += 1

    def stamp(self, keys: Iterable[tuple[str, str, str]]) -> tuple[int, ...]:
        """A value that changes when any of these (stage, split, name) series changes, or on ``clear``."""
        return (self._clears, *(self._versions.get(key, 0) for key in keys))

    def add_records(self, records: Iterable[dict]) -> None:
        """Records as in metrics.jsonl (``stage``, ``split``, ``epoch`` and metric values)."""
        skip = {"job", "stage", "epoch", "step", "split", "time"}
        for record in records:
            values = {k: v for k, v in record.items() if k not in skip}
            self.add(str(record.get("stage", "")), str(record.get("split", "")), float(record.get("epoch", 0)), values)

    def series(self, stage: str, split: str, name: str) -> list[Point]:
        return list(self._series.get((stage, split, name), ()))

    def last(self, stage: str, split: str, name: str) -> float | None:
        points = self._series.get((stage, split, name))
        return points[-1][1] if points else None

    def clear(self) -> None:
        self._series.clear()
        self._versions.clear()
        self._clears += 1
        self.version += 1

    def __bool__(self) -> bool:
        return bool(self._series)


def downsample(points: list[Point], limit: int) -> list[Point]:
    """At most ``limit`` evenly spaced points, always keeping the first and the last."""
    if limit < 2 or len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def smooth(values: list[float], weight: float) -> list[float]:
    """Exponential moving average (``weight`` 0 = raw, 0.9 = strong), debiased at the start."""
    if weight <= 0:
        return list(values)
    out, avg = [], 0.0
    for i, value in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight ** i))
    return out
