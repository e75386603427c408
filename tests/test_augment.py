"""Paired batch augmentation: per-sample draws, the same draw for VLR and HR, torchvision's formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.data.augment import PairedAugment, jitter, rotate


def _faces(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images (blurred noise), so resampling errors stay small."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_rotate_by_zero_is_identity_and_by_90_turns_counter_clockwise():
    images = torch.rand(2, 3, 8, 8)
    assert torch.allclose(rotate(images, torch.zeros(2)), images, atol=1e-5)
    turned = rotate(images, torch.tensor([90.0, -90.0]))
    assert torch.allclose(turned[0], torch.rot90(images[0], 1, (1, 2)), atol=1e-5)
    assert torch.allclose(turned[1], torch.rot90(images[1], -1, (1, 2)), atol=1e-5)


def test_jitter_formulas():
    images = torch.rand(3, 3, 8, 8) * 0.8
    ones = torch.ones(3)
    brighter = jitter(images, torch.tensor([1.2, 1.0, 0.5]), ones, ones)
    assert torch.allclose(brighter, (images * torch.tensor([1.2, 1.0, 0.5]).view(3, 1, 1, 1)).clamp(0, 1), atol=1e-6)
    grey = jitter(images, ones, ones, torch.zeros(3))
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)
    flat = jitter(images, ones, torch.zeros(3), ones)
    assert flat.flatten(1).std(dim=1).max() < 1e-5  # contrast 0 = the mean grey level everywhere


def test_each_pair_gets_its_own_draw_shared_by_vlr_and_hr():
    hr = _faces(1).expand(6, -1, -1, -1).contiguous()  # six copies of one image
    vlr = F.avg_pool2d(hr, 4)                              # 16x16, a 4x box downscale
    augment = PairedAugment(rotation_p=1.0, rotation_degrees=10.0, color_jitter_p=1.0, brightness=(0.8, 1.2),
                            contrast=(0.8, 1.2), saturation=(0.8, 1.2))
    aug_vlr, aug_hr = augment(vlr, hr, torch.Generator().manual_seed(3))
    # per sample: the six identical inputs come out different
    assert (aug_hr[1:] - aug_hr[0]).abs().flatten(1).mean(dim=1).min() > 1e-3
    # shared: downscaling the augmented HR gives (about) the augmented VLR, far closer than the original VLR
    matched = (F.avg_pool2d(aug_hr, 4) - aug_vlr).abs().mean()
    unmatched = (F.avg_pool2d(aug_hr, 4) - vlr).abs().mean()
    assert matched < 0.01 and matched < unmatched / 3


def test_probability_zero_and_determinism():
    hr = _faces(4)
    vlr = F.avg_pool2d(hr, 4)
    off = PairedAugment(rotation_p=0.0, rotation_degrees=10.0, color_jitter_p=0.0, brightness=(0.5, 1.5))
    out_vlr, out_hr = off(vlr, hr, torch.Generator().manual_seed(0))
    assert torch.equal(out_vlr, vlr) and torch.equal(out_hr, hr)
    on = PairedAugment(rotation_p=0.5, rotation_degrees=10.0, color_jitter_p=0.5, brightness=(0.5, 1.5))
    first = on(vlr, hr, torch.Generator().manual_seed(7))
    again = on(vlr, hr, torch.Generator().manual_seed(7))
    assert torch.equal(first[1], again[1])
