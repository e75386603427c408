"""JPEG compression as batch tensor maths on the images' device (the BasicSR / Real-ESRGAN ``DiffJPEG`` idea).

A camera's codec is part of its degradation, and the degradation runs inside the training step on
whole batches: a round trip through libjpeg per image would copy every batch to the host and back.
This is baseline JPEG as libjpeg does it at its defaults, in tensor operations:

    RGB -> YCbCr (JFIF, 0..255) -> 4:2:0 chroma (2x2 mean) -> level shift -128 -> 8x8 DCT-II
        -> quantise with the IJG tables scaled by the quality (libjpeg's ``jpeg_quality_scaling``)
        -> dequantise -> inverse DCT -> chroma upsampled (bilinear, like libjpeg's fancy upsampling) -> RGB

Each image has its own quality. Sizes that are not multiples of 16 are padded by repeating the edge
(as an encoder pads its last MCU) and cropped back. Against Pillow's libjpeg at the same quality the
result differs by about one grey level on average (``tests/test_camera.py``): the entropy coding is
lossless, so the DCT rounding is the whole of the loss.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# ITU T.81 Annex K tables (libjpeg's std_luminance_quant_tbl / std_chrominance_quant_tbl), row-major
_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32))
_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


@functools.lru_cache(maxsize=8)
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """The tables, colour matrices and DCT matrix on ``device``, made once per device (a tensor built from Python
    numbers on a GPU is a blocking copy: never inside a step)."""
    k = torch.arange(8, dtype=torch.float32)
    dct = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    dct[0] /= math.sqrt(2)      # the orthonormal 8-point DCT-II: D @ block @ D.T is the 2-D DCT of a block
    cpu = {"luma": torch.tensor(_LUMA, dtype=torch.float32).view(1, 8, 8),
           "chroma": torch.tensor(_CHROMA, dtype=torch.float32).view(1, 8, 8),
           "to_ycc": torch.tensor(_TO_YCBCR), "to_rgb": torch.tensor(_TO_RGB), "dct": dct}
    return {name: value.to(device) for name, value in cpu.items()}


def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([N,8,8] luma, [N,8,8] chroma) quantisation tables of per-image qualities 1..100 (libjpeg's
    ``jpeg_quality_scaling``, integer division included, and ``jpeg_add_quant_table``'s rounding)."""
    q = quality.float().clamp(1, 100).view(-1, 1, 1)
    scale = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q)
    const = _constants(quality.device)
    return tuple(torch.floor((const[name] * scale + 50.0) / 100.0).clamp(1.0, 255.0) for name in ("luma", "chroma"))


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    """[N,H,W] -> [N,H/8,W/8,8,8]."""
    n, h, w = plane.shape
    return plane.view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    n, bh, bw, _, _ = blocks.shape
    return blocks.permute(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def _quantised(plane: torch.Tensor, table: torch.Tensor, dct: torch.Tensor) -> torch.Tensor:
    """One 0..255 plane [N,H,W] through DCT, quantisation with ``table`` [N,8,8] and back."""
    coefficients = dct @ _blocks(plane - 128.0) @ dct.T
    t = table[:, None, None]
    restored = dct.T @ (torch.round(coefficients / t) * t) @ dct
    return _unblocks(restored) + 128.0


def jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[N,3,H,W]`` -> the same images compressed at ``quality`` ``[N]`` (1..100) and decoded, uint8."""
    n, _, h, w = images.shape
    ph, pw = -h % 16, -w % 16
    x = images.float()
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    const = _constants(x.device)
    ycc = torch.einsum("ij,njhw->nihw", const["to_ycc"], x)
    ycc[:, 1:] += 128.0
    luma_table, chroma_table = quality_tables(quality.to(x.device))
    dct = const["dct"]
    y = _quantised(ycc[:, 0], luma_table, dct)
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    cb, cr = (_quantised(chroma[:, i], chroma_table, dct) for i in (0, 1))
    chroma = F.interpolate(torch.stack([cb, cr], 1), scale_factor=2, mode="bilinear", align_corners=False)
    ycc = torch.cat([y[:, None], chroma], 1).clamp(0.0, 255.0)       # the decoder's samples are 8-bit
    ycc[:, 1:] -= 128.0
    rgb = torch.einsum("ij,njhw->nihw", const["to_rgb"], ycc)
    return rgb[:, :, :h, :w].round().clamp(0, 255).to(torch.uint8)
