"""Identity loss: 1 - cos(EdgeFace(SR), EdgeFace(HR)), averaged over the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_loss(sr_embedding: torch.Tensor, hr_embedding: torch.Tensor) -> torch.Tensor:
    """0 when SR and HR embed to the same direction; up to 2 for opposite directions."""
    cos = F.cosine_similarity(sr_embedding.float(), hr_embedding.float(), dim=1)
    return (1.0 - cos).mean()
