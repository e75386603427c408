"""Where a training run stands: ``LoopState`` (the exact resume position, saved in last.pt) and ``Sums``
(an epoch's metric sums, kept on the device and all-reduced over ranks).

Only the epoch loop (``engine.train.loop.fit``) and the bookkeeper's ``step_done`` write a ``LoopState``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from engine import distributed
from engine.distributed import Context


@dataclass
class LoopState:
    """Where a run is; saved in last.pt, so a resumed run continues exactly where it stopped."""
    stage: str = ""
    epoch: int = 0                    # last completed epoch of ``stage``
    step_in_epoch: int = 0            # optimiser steps done in the unfinished epoch (0 at an epoch boundary)
    global_step: int = 0
    best_score: float = -math.inf     # DSR: val PSNR; fine-tuning: val top-1
    best_epoch: int = 0
    best_stage: str = ""
    stale_epochs: int = 0             # epochs of ``stage`` since its best score (early stopping)
    stage_best: float = -math.inf     # the best score of ``stage`` so far (what early stopping compares)
    skipped_steps: int = 0            # steps skipped for a non-finite loss or gradient
    best_values: dict[str, float] = field(default_factory=dict)
    last_values: dict[str, float] = field(default_factory=dict)
    stages_done: list[str] = field(default_factory=list)
    epoch_order: torch.Tensor | None = None   # the unfinished epoch's sample order
    epoch_sums: dict[str, Any] | None = None  # ... and its partial metric sums

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoopState":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def start_epoch(self, stage: str, epoch: int, length: int, seed: int) -> torch.Tensor:
        """The sample order of ``epoch``: the saved one when resuming inside it, else a permutation drawn from
        (seed, stage, epoch) alone, so every rank under torchrun draws the same order whatever its
        augmentation consumed (each rank then takes its slice of every global batch)."""
        resuming = (self.stage == stage and self.epoch_order is not None and epoch == self.epoch + 1
                    and len(self.epoch_order) == length)
        if resuming:
            return self.epoch_order
        self.stage, self.step_in_epoch, self.epoch_sums = stage, 0, None
        order_seed = (seed * 1_000_003 + sum(map(ord, stage)) * 10_007 + epoch) % 2**63
        self.epoch_order = torch.randperm(length, generator=torch.Generator().manual_seed(order_seed))
        return self.epoch_order

    def step_generator(self, generator: torch.Generator, seed: int, rank: int) -> torch.Generator:
        """``generator`` re-seeded for the next step from (seed, global step, rank) alone: under torchrun each
        rank draws its own augmentation for its own images, and a resumed run draws the same ones at the same
        step on every rank (no per-rank generator state to save)."""
        return generator.manual_seed(((seed * 1_000_003 + self.global_step) * 1_009 + rank) % 2**63)

    def end_epoch(self, epoch: int) -> None:
        self.epoch, self.step_in_epoch, self.epoch_order, self.epoch_sums = epoch, 0, None, None


class Sums:
    """Image-weighted sums of per-batch means, kept on the device (no sync per step); all-reduced."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.sums: dict[str, torch.Tensor] = dict((state or {}).get("sums", {}))
        self._count: int | torch.Tensor = int((state or {}).get("count", 0))

    def add(self, values: dict[str, torch.Tensor], n: int, applied: torch.Tensor | None = None) -> None:
        """Add a batch of ``n`` images; ``applied`` (a 0-dim bool on the device, from the update) False leaves
        the sums as they were: a skipped step counts nothing, decided on the device without a sync."""
        for name, value in values.items():
            value = value.detach().float() * n
            if applied is not None:
                value = torch.where(applied, value, torch.zeros_like(value))
            self.sums[name] = self.sums[name].to(value.device) + value if name in self.sums else value
        self._count = self._count + (n if applied is None else applied.long() * n)

    @classmethod
    def resumed(cls, state: dict[str, Any] | None, ctx: Context) -> "Sums":
        """The unfinished epoch's sums on resume: rank 0 carries every rank's share (``state``), the other
        ranks start from zeros under the same names, so every rank takes part in the same all-reduces."""
        if ctx.is_main or not state:
            return cls(state)
        return cls({"sums": {name: torch.zeros_like(value) for name, value in state.get("sums", {}).items()},
                    "count": 0})

    def total_count(self, ctx: Context) -> int:
        """Images summed over all ranks (every rank calls this; every rank holds the same names, so an empty
        one is empty everywhere)."""
        return int(self._totals(ctx)[1]) if self.sums else 0

    @property
    def count(self) -> int:
        """Images summed (a host sync when the count is on the device: read it at an epoch's end)."""
        return int(self._count)

    def _totals(self, ctx: Context) -> tuple[dict[str, torch.Tensor], float]:
        device = next(iter(self.sums.values())).device
        count = torch.as_tensor(self._count, dtype=torch.float32).to(device)
        totals = distributed.all_reduce_sums({**self.sums, "_count": count}, ctx)
        return totals, float(totals.pop("_count"))

    def state(self, ctx: Context = distributed.SINGLE) -> dict[str, Any]:
        """The sums for last.pt; under torchrun summed over the ranks (every rank calls this), so rank 0's
        resumed epoch carries everyone's share and the other ranks restart theirs from zero."""
        if not self.sums:
            return {"sums": {}, "count": 0}
        totals, count = self._totals(ctx)
        return {"sums": {k: v.detach().cpu() for k, v in totals.items()}, "count": int(count)}

    def means(self, ctx: Context) -> dict[str, float]:
        if not self.sums:
            return {}
        totals, count = self._totals(ctx)
        return {name: float(total) / max(1.0, count) for name, total in totals.items()}
