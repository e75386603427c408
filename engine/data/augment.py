"""Batch augmentations on the device: one random draw per sample, no per-image Python work.

Random parameters are drawn from a CPU ``torch.Generator`` (the trainers seed it per step from
(seed, step, rank), so a resumed run draws the same numbers) and copied to the images' device
without blocking (a blocking copy would wait for the GPU's queue); the image maths runs on whole
batches there.

Paired use (DSR): :class:`PairedAugment` applies the *same* rotation angle and colour factors to a
VLR image and its HR partner. The rotation is built in normalised coordinates (``affine_grid``),
which a resize leaves unchanged, so a rotated VLR image is still the downscaled rotated HR image
(a true rotation of the square HR face; the 14x16 VLR is that rotation squeezed like the VLR is).
Single use (fine-tuning): call :func:`rotate` and :func:`jitter` on one batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import adjust_hue, rgb_to_grayscale


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of ``[N,C,H,W]`` by its own angle (``[N]``, degrees, counter-clockwise).

    Bilinear sampling; pixels that come from outside the image repeat the border (no black corners
    for the network to learn).
    """
    radians = degrees.to(device=images.device, dtype=torch.float32, non_blocking=True) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return rotated.to(images.dtype)


def _blend(image: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * image + (1 - factor) * other`` per sample, clamped to [0, 1] (torchvision's blend)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * image + (1.0 - f) * other).clamp(0.0, 1.0)


def jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
           saturation: torch.Tensor) -> torch.Tensor:
    """Per-sample colour jitter of RGB images in [0, 1], in torchvision's order and formulas.

    Factors are ``[N]`` tensors (1 = unchanged): brightness scales, contrast blends with the
    image's mean grey level, saturation blends with the image's grey version.
    """
    out = (images * brightness.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    grey_mean = rgb_to_grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = _blend(out, grey_mean, contrast)
    return _blend(out, rgb_to_grayscale(out), saturation)


def uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class PairedAugment:
    """The guide's DSR augmentation: rotation (p, +-degrees) and colour jitter (p, factor ranges)."""

    rotation_p: float = 0.0
    rotation_degrees: float = 0.0
    color_jitter_p: float = 0.0
    brightness: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    saturation: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_config(cls, dsr) -> "PairedAugment":
        """From a preset's ``[dsr]`` section."""
        return cls(dsr.rotation_p, dsr.rotation_degrees, dsr.color_jitter_p, tuple(dsr.brightness),
                   tuple(dsr.contrast), tuple(dsr.saturation))

    def __call__(self, vlr: torch.Tensor, hr: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch of pairs (float in [0, 1]); each pair gets its own draw, shared by VLR and HR."""
        vlr, hr = self.apply([vlr, hr], generator)
        return vlr, hr

    def apply(self, images: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """The same draw for each batch of ``images`` (e.g. [HR] alone, when a camera makes the VLR from it)."""
        n = images[0].shape[0]
        if self.rotation_p > 0 and self.rotation_degrees > 0:
            angles = uniform(n, -self.rotation_degrees, self.rotation_degrees, generator)
            angles = torch.where(torch.rand(n, generator=generator) < self.rotation_p, angles, 0.0)
            images = [rotate(x, angles) for x in images]
        if self.color_jitter_p > 0:
            apply = torch.rand(n, generator=generator) < self.color_jitter_p
            factors = [torch.where(apply, uniform(n, lo, hi, generator), 1.0).to(images[0].device, non_blocking=True)
                       for lo, hi in (self.brightness, self.contrast, self.saturation)]
            images = [jitter(x, *factors) for x in images]
        return images


@dataclass(frozen=True)
class FinetuneAugment:
    """The guide's fine-tuning augmentation, torchvision's ``RandomHorizontalFlip(0.5)``, ``ColorJitter(brightness, contrast, saturation, hue)``
    and ``RandomRotation(degrees)``, applied to a float [0, 1] batch: flip, brightness, contrast,
    saturation and rotation get one random draw per sample; the hue shift
    draws one factor per batch (torchvision's ``adjust_hue`` takes a single factor, and a per-sample
    HSV round trip is not worth its cost for a +-0.02 shift).
    """

    flip_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    rotation_degrees: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> "FinetuneAugment":
        """From a preset's ``[finetune]`` section."""
        return cls(cfg.flip_p, cfg.jitter_brightness, cfg.jitter_contrast, cfg.jitter_saturation, cfg.jitter_hue,
                   cfg.rotation_degrees)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a float [0, 1] batch ``[N,3,H,W]``; random numbers come from ``generator`` (CPU)."""
        n, device = images.shape[0], images.device
        if self.flip_p > 0:
            flip = (torch.rand(n, generator=generator) < self.flip_p).to(device, non_blocking=True).view(-1, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
        if self.brightness or self.contrast or self.saturation:
            factors = [uniform(n, max(0.0, 1 - r), 1 + r, generator).to(device, non_blocking=True)
                       for r in (self.brightness, self.contrast, self.saturation)]
            images = jitter(images, *factors)
        if self.hue > 0:
            shift = float(uniform(1, -self.hue, self.hue, generator))
            images = adjust_hue(images, shift)
        if self.rotation_degrees > 0:
            images = rotate(images, uniform(n, -self.rotation_degrees, self.rotation_degrees, generator))
        return images
