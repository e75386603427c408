"""L1 pixel loss between the SR output and the HR target."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over pixels and channels (images in [0, 1])."""
    return F.l1_loss(sr.float(), hr.float())
