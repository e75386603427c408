"""Resizing to a fixed size as modules: ``F.interpolate`` while training, its matrices when deployed; and the
pixel shuffle as the transposed convolution it is.

Bicubic and (antialiased) bilinear resizing are separable linear maps: for a fixed input size, ``out = Ry @ x @
Rx^T`` with two small constant matrices. :meth:`Resize.as_matrices` builds them from ``F.interpolate`` itself
(by resizing unit vectors), so the result is the same up to float rounding; ONNX Runtime runs two small
MatMuls much faster than its cubic Resize kernel (benchmarks/bench_export.py). Likewise a pixel shuffle is a
transposed convolution with 0/1 weights, stride r, one group per output channel (exact: each output is one
input times 1 plus zeros); ONNX Runtime runs that faster than its DepthToSpace between NCHWc convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Resize(nn.Module):
    """``F.interpolate(x, size, mode, antialias)`` (``align_corners=False``); the identity when x has that size."""

    def __init__(self, size: tuple[int, int], mode: str, antialias: bool = False):
        super().__init__()
        self.size, self.mode, self.antialias = (int(size[0]), int(size[1])), mode, bool(antialias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode=self.mode, antialias=self.antialias, align_corners=False)

    def axis_matrix(self, length: int, out_length: int) -> torch.Tensor:
        """[out_length, length]: this resize along one axis (the other one kept at size 1, where it is the identity)."""
        units = torch.eye(length, dtype=torch.float64).view(length, 1, 1, length)
        resized = F.interpolate(units, size=(1, out_length), mode=self.mode, antialias=self.antialias,
                                align_corners=False)
        return resized.view(length, out_length).t().float().contiguous()

    def as_matrices(self, input_size: tuple[int, int]) -> nn.Module:
        """This resize for inputs of ``input_size`` (height, width) as two constant matrix products."""
        height, width = int(input_size[0]), int(input_size[1])
        if (height, width) == self.size:
            return nn.Identity()
        return MatrixResize(self.axis_matrix(height, self.size[0]), self.axis_matrix(width, self.size[1]))


class PixelShuffleAsConvTranspose(nn.Module):
    """``nn.PixelShuffle(r)`` on ``channels * r * r`` input channels, as a grouped transposed convolution."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        weight = torch.zeros(channels * factor * factor, 1, factor, factor)
        for channel in range(channels):
            for row in range(factor):
                for column in range(factor):
                    weight[(channel * factor + row) * factor + column, 0, row, column] = 1.0
        self.register_buffer("weight", weight, persistent=False)
        self.channels, self.factor = channels, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, stride=self.factor, groups=self.channels)


class MatrixResize(nn.Module):
    """``rows @ x @ columns^T`` on [..., H, W]: a separable resize of a fixed input size."""

    def __init__(self, rows: torch.Tensor, columns: torch.Tensor):
        super().__init__()
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("columns_t", columns.t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.rows, torch.matmul(x, self.columns_t))
