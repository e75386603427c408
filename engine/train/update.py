"""The optimiser update of a training step, with no device-to-host synchronisation.

backward -> (fp16) unscale -> gradient norm (clipped when asked) -> AdamW step. A step whose norm
is not finite (a NaN or inf loss gives NaN gradients, so the norm covers both) must not reach the
weights, but asking the host ``bool(norm.isfinite())`` every step would stall a GPU once per step.
So the fused AdamW kernel is told to skip the step on the device (``found_inf``, the mechanism
GradScaler uses), and the skipped steps are counted on the device (``NonFiniteCount``) and read
only every few steps, when the trainer reports progress. An optimiser without the fused kernel (a
resumed run whose checkpoint chose another one) falls back to one host check per step.

fp16 with a GradScaler: overflowing steps are the scaler's to skip (it lowers its scale; this is
expected, not instability) and are not counted.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import torch


class NonFiniteCount:
    """Steps skipped for a non-finite gradient norm, and the longest run of them, kept on the device."""

    def __init__(self, device: torch.device | str) -> None:
        zero = torch.zeros((), dtype=torch.int64, device=device)
        self.skipped, self.run, self.longest = zero.clone(), zero.clone(), zero.clone()

    def add(self, finite: torch.Tensor) -> None:
        bad = (~finite).long()
        self.skipped += bad
        self.run = (self.run + bad) * bad          # consecutive skipped steps, 0 after a finite one
        torch.maximum(self.longest, self.run, out=self.longest)

    def read(self) -> tuple[int, int]:
        """(steps skipped, longest run of consecutive skipped steps) since the last read: one host sync."""
        skipped, longest = torch.stack([self.skipped, self.longest]).tolist()
        self.skipped.zero_()
        self.longest.copy_(self.run)               # a run still going on carries over to the next read
        return int(skipped), int(longest)


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """True when every parameter group steps with the fused kernel, which can skip a step on the device."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        group.get("fused") for group in optimizer.param_groups)


class OptimizerUpdate:
    """``update(loss)``: one optimiser update; returns a 0-dim bool tensor, True when the step was applied."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 parameters: Iterable[torch.nn.Parameter], max_norm: float, count: NonFiniteCount) -> None:
        self.optimizer, self.scaler, self.count = optimizer, scaler, count
        self.parameters = list(parameters)
        self.max_norm = max_norm if max_norm > 0 else math.inf    # 0 = no clipping (the norm is still checked)

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        optimizer = self.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.scaler.is_enabled():
            self.scaler.unscale_(optimizer)
            self._norm()                           # clips; the scaler knows about inf/NaN gradients itself
            self.scaler.step(optimizer)            # fused: skipped on the device, no sync
            self.scaler.update()
            return torch.isfinite(loss.detach())
        finite = torch.isfinite(self._norm())
        self.count.add(finite)
        if skips_on_device(optimizer):
            optimizer.found_inf = (~finite).float()
            optimizer.grad_scale = None
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf, optimizer.grad_scale
        elif bool(finite):                         # no device-side skip: one host check per step
            optimizer.step()
        return finite

    def _norm(self) -> torch.Tensor:
        if math.isinf(self.max_norm):               # nothing to clip: the norm alone (no scaling pass)
            grads = [p.grad for p in self.parameters if p.grad is not None]
            return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self._device())
        return torch.nn.utils.clip_grad_norm_(self.parameters, self.max_norm)

    def _device(self) -> torch.device:
        return self.parameters[0].device if self.parameters else torch.device("cpu")


class StepResult(NamedTuple):
    """What a training step gives its loop: the loss, the values to average, and whether it was applied."""
    loss: torch.Tensor
    values: dict[str, torch.Tensor]
    applied: torch.Tensor        # 0-dim bool on the device: False for a step skipped as non-finite (fp16: a
                                 # non-finite loss; the scaler's own overflow skips count as applied)
