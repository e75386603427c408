"""The frozen recogniser used as a critic by the identity, feature-matching and EdgeFace perceptual losses.

It stays in eval mode with ``requires_grad`` False, but the SR pass runs *with* autograd so the
losses send gradient through it into DSR (the original scripts wrapped it in ``no_grad``, and the
identity loss then trained nothing). The HR pass needs no gradient and runs under ``no_grad``.
The recogniser runs once per side per batch; every loss term reuses the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.models.edgeface import prepare_input


@dataclass
class CriticOutputs:
    sr_embedding: torch.Tensor        # [B, 512], carries grad back to the SR images
    hr_embedding: torch.Tensor        # [B, 512], no grad
    sr_stages: list[torch.Tensor]     # stage feature maps of the SR images (with grad)
    hr_stages: list[torch.Tensor]


class FrozenRecogniser(nn.Module):
    def __init__(self, recogniser: nn.Module):
        super().__init__()
        self.net = recogniser.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenRecogniser":
        return super().train(False)  # never leave eval mode (dropout, drop-path, norm statistics)

    def forward(self, sr01: torch.Tensor, hr01: torch.Tensor) -> CriticOutputs:
        """Both batches in [0, 1] at any size (``prepare_input`` resizes to 112 and normalises)."""
        sr_embedding, sr_stages = self.net.features(prepare_input(sr01))
        with torch.no_grad():
            hr_embedding, hr_stages = self.net.features(prepare_input(hr01))
        return CriticOutputs(sr_embedding, hr_embedding, list(sr_stages), list(hr_stages))
