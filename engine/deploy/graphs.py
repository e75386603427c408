"""The two deployed graphs as torch modules: uint8 RGB faces in, L2-normalised embeddings out.

Both take ``uint8 [B, H, W, 3]`` (NHWC, RGB: what an image decoder gives) so that a deployment feeds pixels as
they come; the graphs do the rest exactly as ``evaluate`` does: pixels / 255, DSR (probe) or nothing (gallery),
clamp to [0, 1], EdgeFace's input (112x112 bilinear antialiased, (x - 0.5) / 0.5), the recogniser, L2 norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.pairs import to_float
from engine.models.edgeface import prepare_input

PREPROCESSING = ("uint8 RGB NHWC -> float / 255 -> [probe: DSR to HR, clamped to [0, 1]] -> bilinear antialiased "
                 "resize to 112x112 -> (x - 0.5) / 0.5 -> EdgeFace -> L2 normalisation")


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (the dataset cache's conversion, after the layout change)."""
    return to_float(images.permute(0, 3, 1, 2))


class ProbeGraph(nn.Module):
    """A VLR face -> embedding through DSR and the recogniser."""

    def __init__(self, dsr: nn.Module, recogniser: nn.Module):
        super().__init__()
        self.dsr, self.recogniser = dsr, recogniser

    def forward(self, vlr: torch.Tensor) -> torch.Tensor:
        restored = self.dsr(_to_float(vlr)).clamp(0.0, 1.0)
        return F.normalize(self.recogniser(prepare_input(restored)), dim=1)


class GalleryGraph(nn.Module):
    """An HR face -> embedding through the recogniser."""

    def __init__(self, recogniser: nn.Module):
        super().__init__()
        self.recogniser = recogniser

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.recogniser(prepare_input(_to_float(hr))), dim=1)
