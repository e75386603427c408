"""Camera-like degradations for the VLR images of ``prepare --degrade``: blur, sensor noise, JPEG.

Synthetic bicubic downsampling flatters super-resolution; real low-resolution faces are also
blurred by optics and motion, noisy and compressed. Each VLR image is made as::

    HR -> Gaussian blur (sigma in VLR pixels, applied on HR as sigma x the downscale factor)
       -> antialiased bicubic downsample to the VLR size (as without degradation)
       -> additive Gaussian sensor noise (sigma in 8-bit grey levels, per pixel and channel)
       -> JPEG at a quality in [lo, hi], decoded again

Each parameter is drawn uniformly from its range with a generator seeded by ``(seed, image
name)``, so one image's degradation does not depend on the others and a run with the same seed
writes the same bytes. The drawn values are returned for the manifest.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from engine.data.writer import make_vlr

DEFAULT_SPEC = "blur=0.3:1.5,noise=0:6,jpeg=40:90"
METHOD = ("HR -> Gaussian blur (sigma in VLR pixels, applied on HR scaled by the downscale factor; Pillow "
          "GaussianBlur) -> antialiased bicubic downsample -> Gaussian noise (sigma in 8-bit levels) -> JPEG at "
          "the drawn quality (Pillow, 4:2:0) and decoded; each value drawn uniformly from its range by a "
          "generator seeded with (seed, CRC-32 of the image name)")


@dataclass(frozen=True)
class Degradation:
    blur_sigma: tuple[float, float] = (0.0, 0.0)     # VLR pixels
    noise_sigma: tuple[float, float] = (0.0, 0.0)    # 8-bit grey levels
    jpeg_quality: tuple[int, int] | None = None      # None = no JPEG step

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if v is not None else None) for k, v in asdict(self).items()}


def _range(key: str, text: str, low: float, high: float) -> tuple[float, float]:
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not (low <= values[0] <= values[1] <= high):
        raise ValueError(f"{key}={text}: expected LO:HI (or one value) with {low:g} <= LO <= HI <= {high:g}")
    return values[0], values[1]


def parse_degradation(text: str) -> Degradation:
    """``"blur=0.3:1.5,noise=0:6,jpeg=40:90"`` (any subset; ``""`` or ``"default"`` = :data:`DEFAULT_SPEC`)."""
    text = (text or "").strip()
    if text in ("", "default"):
        text = DEFAULT_SPEC
    found: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in ("blur", "noise", "jpeg") or key in found:
            raise ValueError(f"{item.strip()!r}: expected blur=LO:HI, noise=LO:HI or jpeg=LO:HI, each at most once "
                             f"(e.g. {DEFAULT_SPEC})")
        if key == "blur":
            found[key] = _range(key, value, 0.0, 10.0)
        elif key == "noise":
            found[key] = _range(key, value, 0.0, 100.0)
        else:
            lo, hi = _range(key, value, 1.0, 100.0)
            if lo != int(lo) or hi != int(hi):
                raise ValueError(f"jpeg={value}: JPEG qualities are whole numbers from 1 to 100")
            found[key] = (int(lo), int(hi))
    return Degradation(blur_sigma=found.get("blur", (0.0, 0.0)), noise_sigma=found.get("noise", (0.0, 0.0)),
                       jpeg_quality=found.get("jpeg"))


def image_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def degraded_vlr(hr: Image.Image, vlr_size: tuple[int, int], spec: Degradation, seed: int, name: str
                 ) -> tuple[Image.Image, dict[str, Any]]:
    """The degraded VLR partner of ``hr`` and the values drawn for it (for the manifest)."""
    rng = image_rng(seed, name)
    sigma = float(rng.uniform(*spec.blur_sigma))
    noise = float(rng.uniform(*spec.noise_sigma))
    quality = int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1)) if spec.jpeg_quality else None
    scale = hr.size[0] / vlr_size[0]
    image = hr.filter(ImageFilter.GaussianBlur(radius=sigma * scale)) if sigma > 0 else hr
    vlr = make_vlr(image, vlr_size)
    if noise > 0:
        arr = np.asarray(vlr, dtype=np.float64)
        arr = arr + rng.normal(0.0, noise, arr.shape)
        vlr = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode=vlr.mode)
    if quality is not None:
        buffer = io.BytesIO()
        vlr.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            vlr = decoded.convert("RGB")
    return vlr, {"blur_sigma": round(sigma, 4), "noise_sigma": round(noise, 4), "jpeg_quality": quality}


def write_degraded_pair(root, split: str, name: str, hr: Image.Image, vlr_size: tuple[int, int],
                        spec: Degradation, seed: int) -> dict[str, Any]:
    """Like :func:`engine.data.writer.write_pair`, with a degraded VLR image; returns the drawn values."""
    from engine.data.layout import HR_DIR, VLR_DIR, split_dir

    folder = split_dir(root, split)
    hr.save(folder / HR_DIR / name, format="PNG", compress_level=1)
    vlr, drawn = degraded_vlr(hr, vlr_size, spec, seed, f"{split}/{name}")
    vlr.save(folder / VLR_DIR / name, format="PNG", compress_level=1)
    return drawn
