"""PSNR/SSIM conventions: [0, 1], data range 1, whole image, per-image values."""

from __future__ import annotations

import math

import torch

from engine.metrics.image import SSIM_SIGMA, SSIM_WINDOW, psnr, ssim


def test_psnr_of_a_uniform_error_and_of_identical_images():
    target = torch.full((2, 3, 32, 32), 0.5)
    assert torch.allclose(psnr(target + 0.1, target), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert torch.allclose(psnr(target, target), torch.tensor([100.0, 100.0]))


def test_psnr_is_per_image_and_clamps_to_the_unit_range():
    target = torch.zeros(2, 3, 16, 16)
    pred = torch.stack([torch.full((3, 16, 16), 0.01), torch.full((3, 16, 16), 2.0)])
    values = psnr(pred, target)
    assert math.isclose(values[0].item(), 40.0, abs_tol=1e-3)
    assert math.isclose(values[1].item(), 0.0, abs_tol=1e-4)  # 2.0 is scored as 1.0


def _naive_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Window-by-window SSIM of one [C,H,W] pair, written out from Wang et al. 2004."""
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * SSIM_SIGMA ** 2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    scores = []
    for ch in range(a.shape[0]):
        for y in range(a.shape[1] - SSIM_WINDOW + 1):
            for x in range(a.shape[2] - SSIM_WINDOW + 1):
                pa = a[ch, y:y + SSIM_WINDOW, x:x + SSIM_WINDOW].double()
                pb = b[ch, y:y + SSIM_WINDOW, x:x + SSIM_WINDOW].double()
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                scores.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return torch.stack(scores).mean().item()


def test_ssim_matches_the_windowed_definition():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 16, 16, generator=gen)
    b = (a + 0.2 * torch.rand(2, 3, 16, 16, generator=gen)).clamp(0, 1)
    values = ssim(a, b)
    for i in range(2):
        assert math.isclose(values[i].item(), _naive_ssim(a[i], b[i]), abs_tol=1e-4)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 64, 64, generator=gen)
    noise = torch.randn(1, 3, 64, 64, generator=gen)
    assert math.isclose(ssim(image, image).item(), 1.0, abs_tol=1e-5)
    slight, strong = ssim(image + 0.02 * noise, image).item(), ssim(image + 0.2 * noise, image).item()
    assert 1.0 > slight > strong
