"""Learning-rate schedule stepped once per optimiser step: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

MIN_LR_FACTOR = 0.01  # the cosine ends at 1% of the peak rate, not 0 (the last epochs still learn)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float = MIN_LR_FACTOR) -> float:
    """Multiplier of the peak rate at optimiser step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """A per-step ``LambdaLR``; its ``state_dict`` (the step count) is what a resume needs."""
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps))
