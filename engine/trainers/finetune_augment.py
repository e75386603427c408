"""The guide's fine-tuning augmentation on whole batches on the device.

torchvision's ``RandomHorizontalFlip(0.5)``, ``ColorJitter(brightness, contrast, saturation, hue)``
and ``RandomRotation(degrees)``, applied to a float [0, 1] batch: flip, brightness, contrast,
saturation and rotation get one random draw per sample (engine.augment's batch ops); the hue shift
draws one factor per batch (torchvision's ``adjust_hue`` takes a single factor, and a per-sample
HSV round trip is not worth its cost for a +-0.02 shift).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2.functional import adjust_hue

from engine.augment import jitter, rotate


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


@dataclass(frozen=True)
class FinetuneAugment:
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
            flip = (torch.rand(n, generator=generator) < self.flip_p).to(device).view(-1, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
        if self.brightness or self.contrast or self.saturation:
            factors = [_uniform(n, max(0.0, 1 - r), 1 + r, generator).to(device)
                       for r in (self.brightness, self.contrast, self.saturation)]
            images = jitter(images, *factors)
        if self.hue > 0:
            shift = float(_uniform(1, -self.hue, self.hue, generator))
            images = adjust_hue(images, shift)
        if self.rotation_degrees > 0:
            images = rotate(images, _uniform(n, -self.rotation_degrees, self.rotation_degrees, generator))
        return images
