"""PSNR and SSIM of super-resolved faces, with one convention used everywhere in the workbench.

Convention: RGB images as float in [0, 1], NCHW; data range 1; computed over the whole HR image
(128x128, no border crop, no Y-channel conversion); one value per image, and a reported figure is
the mean over images (not the PSNR of the mean MSE). SSIM uses an 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, per channel then averaged over channels, over the "valid" region
(no padding: the 118x118 window centres of a 128x128 image), as in Wang et al. 2004.
Inputs are clamped to [0, 1] first, so an unclamped network output is scored as it would be saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1 = 0.01 ** 2  # (K1 * data range)^2
_C2 = 0.03 ** 2
_MIN_MSE = 1e-10  # caps PSNR of identical images at 100 dB instead of inf


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image: ``[N]`` from two ``[N,C,H,W]`` batches in [0, 1]."""
    pred, target = _prepare(pred, target)
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(_MIN_MSE))


def _gaussian_window(channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-coords.pow(2) / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image: ``[N]`` from two ``[N,C,H,W]`` batches in [0, 1] (images >= 11x11)."""
    pred, target = _prepare(pred, target)
    channels = pred.shape[1]
    window = _gaussian_window(channels, pred.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    mu_p, mu_t = blur(pred), blur(target)
    var_p = blur(pred * pred) - mu_p.pow(2)
    var_t = blur(target * target) - mu_t.pow(2)
    cov = blur(pred * target) - mu_p * mu_t
    score = ((2 * mu_p * mu_t + _C1) * (2 * cov + _C2)) / ((mu_p.pow(2) + mu_t.pow(2) + _C1) * (var_p + var_t + _C2))
    return score.flatten(1).mean(dim=1)


def _prepare(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"PSNR/SSIM need two NCHW batches of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    return pred.float().clamp(0.0, 1.0), target.float().clamp(0.0, 1.0)
