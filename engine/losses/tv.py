"""Total variation of the SR output: penalises pixel-to-pixel noise."""

from __future__ import annotations

import torch


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of vertical plus horizontal neighbours (the SRGAN form).

    It is a per-pixel mean, so it stays about 1e-3 .. 1e-2 for faces; with the guide's weight
    (2e-6) it is a very light smoothing prior.
    """
    x = images.float()
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return dy + dx
