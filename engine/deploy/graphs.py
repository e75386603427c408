"""The two deployed graphs as torch modules: uint8 RGB faces in, L2-normalised embeddings out.

Both take ``uint8 [B, H, W, 3]`` (NHWC, RGB: what an image decoder gives) so that a deployment feeds pixels as
they come; the graphs do the rest exactly as ``evaluate`` does: pixels / 255, DSR (probe) or nothing (gallery),
clamp to [0, 1], EdgeFace's input (112x112 bilinear antialiased, (x - 0.5) / 0.5), the recogniser, L2 norm.
Their resizes are constant matrix products for the fixed input sizes and DSR's pixel shuffles transposed
convolutions (``DSRNet.for_deployment``, engine/models/resize.py): the same result up to float rounding, and
what ONNX Runtime runs fastest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.pairs import to_float
from engine.models.dsr import DSRNet
from engine.models.edgeface import TO_INPUT_SIZE, prepare_input

PREPROCESSING = ("uint8 RGB NHWC -> float / 255 -> [probe: DSR to HR, clamped to [0, 1]] -> bilinear antialiased "
                 "resize to 112x112 -> (x - 0.5) / 0.5 -> EdgeFace -> L2 normalisation")


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (the dataset cache's conversion, after the layout change)."""
    return to_float(images.permute(0, 3, 1, 2))


class ProbeGraph(nn.Module):
    """A VLR face -> embedding through DSR and the recogniser."""

    def __init__(self, dsr: DSRNet, recogniser: nn.Module):
        super().__init__()
        self.dsr, self.recogniser = dsr.for_deployment(), recogniser
        self.to_recogniser = TO_INPUT_SIZE.as_matrices((dsr.hr_size, dsr.hr_size))

    def forward(self, vlr: torch.Tensor) -> torch.Tensor:
        restored = self.dsr(_to_float(vlr)).clamp(0.0, 1.0)
        return F.normalize(self.recogniser(prepare_input(restored, self.to_recogniser)), dim=1)


class GalleryGraph(nn.Module):
    """An HR face -> embedding through the recogniser."""

    def __init__(self, recogniser: nn.Module, hr_size: int):
        super().__init__()
        self.recogniser = recogniser
        self.to_recogniser = TO_INPUT_SIZE.as_matrices((hr_size, hr_size))

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.recogniser(prepare_input(_to_float(hr), self.to_recogniser)), dim=1)
