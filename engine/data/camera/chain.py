"""The degradation chain on whole batches: HR uint8 -> camera-like VLR uint8, on the images' device.

::

    HR -> antialiased bilinear resize to the 2x VLR grid (where the optics are simulated)
       -> [second pass, for a drawn share: blur -> noise -> JPEG on the 2x grid]
       -> Gaussian blur (isotropic or anisotropic) x motion blur, one transfer function per image (FFT,
          reflect-padded) -> downsample to the VLR size (bicubic/bilinear/area, antialiased, drawn per image)
       -> Gaussian + Poisson noise (colour or grey) -> 8-bit -> JPEG at the drawn quality (``jpeg.py``)

All random numbers are drawn first, on the CPU, from the ``torch.Generator`` given (:func:`draw`):
the trainers re-seed it every step from (seed, step, rank), so an epoch differs from the last, the
same seed repeats it, and a resumed run draws what the uninterrupted one drew. ``draw`` takes the
same numbers whatever the probabilities say (a step that is off for an image gets neutral values),
so one image's draw does not shift the others'. The maths then runs on whole batches with no host
synchronisation; a probability of 0 skips its step's work altogether.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from engine.data.camera.jpeg import jpeg
from engine.data.camera.spec import RESIZE_METHODS, Camera

GRID = 2            # the optics are simulated on a grid of GRID x the VLR size
MAX_PAD = 24        # reflect padding around an image before its FFT blur (pixels of the grid)


@dataclass
class PassDraws:
    """One pass's per-image values ([N] CPU tensors; 0 = the step is off for that image)."""
    sigma_x: torch.Tensor        # VLR pixels
    sigma_y: torch.Tensor
    theta: torch.Tensor          # radians, the blur ellipse's angle
    motion: torch.Tensor         # VLR pixels
    motion_angle: torch.Tensor   # radians
    noise: torch.Tensor          # 8-bit levels
    poisson: torch.Tensor        # Real-ESRGAN's scale
    gray: torch.Tensor           # bool: one noise for the three channels
    quality: torch.Tensor        # 0 = no JPEG, else 1..100


@dataclass
class Draws:
    final: PassDraws
    first: PassDraws | None      # the second-order pass (None when the camera has none)
    second: torch.Tensor         # bool [N]: the image takes the first pass
    method: torch.Tensor         # int [N]: index into RESIZE_METHODS

    def __len__(self) -> int:
        return int(self.method.shape[0])

    def describe(self, i: int) -> dict:
        """Image ``i``'s values, rounded, for a manifest."""
        def one(p: PassDraws) -> dict:
            return {f.name: (round(float(getattr(p, f.name)[i]), 4) if f.name != "gray"
                             else bool(p.gray[i])) for f in fields(PassDraws)}
        out = {**one(self.final), "resize": RESIZE_METHODS[int(self.method[i])]}
        out["quality"] = int(out["quality"]) or None
        if self.first is not None and bool(self.second[i]):
            out["first_pass"] = one(self.first)
        return out


def _uniform(n: int, span, g: torch.Generator) -> torch.Tensor:
    lo, hi = float(span[0]), float(span[1])
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _chance(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) < p


def _draw_pass(camera: Camera, n: int, g: torch.Generator) -> PassDraws:
    blurred, aniso = _chance(n, camera.blur_p, g), _chance(n, camera.blur_anisotropic_p, g)
    sx, sy = _uniform(n, camera.blur_sigma, g), _uniform(n, camera.blur_sigma, g)
    theta = _uniform(n, (0.0, math.pi), g)
    sy, theta = torch.where(aniso, sy, sx), torch.where(aniso, theta, 0.0)
    moved, length, angle = _chance(n, camera.motion_p, g), _uniform(n, camera.motion_length, g), _uniform(n, (0.0, math.pi), g)
    noisy, sigma = _chance(n, camera.noise_p, g), _uniform(n, camera.noise_sigma, g)
    shot, scale = _chance(n, camera.poisson_p, g), _uniform(n, camera.poisson_scale, g)
    gray = _chance(n, camera.noise_gray_p, g)
    coded = _chance(n, camera.jpeg_p, g)
    lo, hi = (int(q) for q in camera.jpeg_quality)
    quality = torch.randint(lo, hi + 1, (n,), generator=g).double()
    zero = torch.zeros(n, dtype=torch.float64)
    return PassDraws(torch.where(blurred, sx, zero), torch.where(blurred, sy, zero), theta,
                     torch.where(moved, length, zero), angle, torch.where(noisy, sigma, zero),
                     torch.where(shot, scale, zero), gray, torch.where(coded, quality, zero))


def draw(camera: Camera, n: int, generator: torch.Generator) -> Draws:
    """Every random value the chain needs for ``n`` images, from ``generator`` (CPU), in a fixed order."""
    final = _draw_pass(camera, n, generator)
    method = torch.randint(0, len(camera.resize), (n,), generator=generator)
    method = torch.tensor([RESIZE_METHODS.index(m) for m in camera.resize])[method]
    if camera.second_pass_p <= 0:
        return Draws(final, None, torch.zeros(n, dtype=torch.bool), method)
    second = _chance(n, camera.second_pass_p, generator)
    return Draws(final, _draw_pass(camera, n, generator), second, method)




def degrade(hr: torch.Tensor, vlr_size: tuple[int, int], camera: Camera, generator: torch.Generator) -> torch.Tensor:
    """HR batch ``[N,3,H,H]`` (uint8, or float in [0, 1]) -> uint8 camera-like VLR ``[N,3,h,w]`` (``vlr_size`` =
    (w, h)), drawn afresh from ``generator``."""
    draws = draw(camera, hr.shape[0], generator)
    return apply(hr, vlr_size, camera, draws, generator)


def image_generator(seed: int, name: str) -> torch.Generator:
    """The generator of one named image: its degradation depends on (seed, name) alone."""
    return torch.Generator().manual_seed((int(seed) & 0xFFFFFFFF) << 32 | zlib.crc32(name.encode("utf-8")))


def degrade_named(hr: torch.Tensor, vlr_size: tuple[int, int], camera: Camera, seed: int, names: list[str]
                  ) -> tuple[torch.Tensor, list[dict]]:
    """Each image degraded with its own generator (:func:`image_generator`): a dataset's or a probe set's
    camera, the same for an image whatever else is in the batch. Returns the VLR batch and each image's values."""
    out, drawn = [], []
    for i, name in enumerate(names):
        g = image_generator(seed, name)
        draws = draw(camera, 1, g)
        out.append(apply(hr[i:i + 1], vlr_size, camera, draws, g))
        drawn.append(draws.describe(0))
    return torch.cat(out), drawn


def apply(hr: torch.Tensor, vlr_size: tuple[int, int], camera: Camera, draws: Draws,
          generator: torch.Generator) -> torch.Tensor:
    """The chain with the values of ``draws``; the noise fields come from ``generator`` after them."""
    w, h = vlr_size
    device = hr.device
    x = hr.float() / 255.0 if hr.dtype == torch.uint8 else hr.float()
    x = F.interpolate(x, size=(GRID * h, GRID * w), mode="bilinear", antialias=True,
                      align_corners=False)
    if draws.first is not None:
        noise = _noise_pair(camera, (len(draws), 3, GRID * h, GRID * w), generator, device)
        once = _jpeg_step(_quantise(_noise(_blur(x, draws.first, GRID), draws.first, noise)), draws.first, camera)
        x = torch.where(draws.second.to(device, non_blocking=True).view(-1, 1, 1, 1), once.float() / 255.0, x)
    x = _resize(_blur(x, draws.final, GRID), (h, w), draws.method, camera)
    x = _noise(x, draws.final, _noise_pair(camera, (len(draws), 3, h, w), generator, device))
    return _jpeg_step(_quantise(x), draws.final, camera)


def _noise_pair(camera: Camera, shape, generator, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Two standard normal fields made on ``device`` by a generator of its own, seeded by one draw of ``generator``
    (no per-step host-to-device copy of noise; the same seed gives the same fields on the same kind of device)."""
    if camera.noise_p <= 0 and camera.poisson_p <= 0:
        return None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    local = torch.Generator(device=device).manual_seed(seed)
    return (torch.randn(shape, generator=local, device=device), torch.randn(shape, generator=local, device=device))


def _on(device: torch.device, values: torch.Tensor) -> torch.Tensor:
    return values.to(device=device, dtype=torch.float32, non_blocking=True).view(-1, 1, 1)


def _blur(x: torch.Tensor, p: PassDraws, scale: float) -> torch.Tensor:
    """Gaussian x motion blur, one transfer function per image, on the reflect-padded image (FFT)."""
    if not (bool((p.sigma_x > 0).any()) or bool((p.motion > 0).any())):   # CPU draws: no device sync
        return x
    n, _, h, w = x.shape
    reach = float(3 * torch.maximum(p.sigma_x, p.sigma_y).max() + p.motion.max()) * scale
    pad = int(min(MAX_PAD, h - 1, w - 1, math.ceil(reach) + 1))
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    hp, wp = padded.shape[-2:]
    fy = torch.fft.fftfreq(hp, device=x.device).view(1, -1, 1)
    fx = torch.fft.rfftfreq(wp, device=x.device).view(1, 1, -1)
    sx, sy = _on(x.device, p.sigma_x) * scale, _on(x.device, p.sigma_y) * scale
    cos, sin = torch.cos(_on(x.device, p.theta)), torch.sin(_on(x.device, p.theta))
    a = sx**2 * cos**2 + sy**2 * sin**2
    c = sx**2 * sin**2 + sy**2 * cos**2
    b = (sx**2 - sy**2) * sin * cos
    gauss = torch.exp(-2 * math.pi**2 * (a * fx**2 + 2 * b * fx * fy + c * fy**2))
    angle = _on(x.device, p.motion_angle)
    motion = torch.sinc(_on(x.device, p.motion) * scale * (fx * torch.cos(angle) + fy * torch.sin(angle)))
    transfer = (gauss * motion)[:, None]
    blurred = torch.fft.irfft2(torch.fft.rfft2(padded) * transfer, s=(hp, wp))
    return blurred[..., pad:pad + h, pad:pad + w].clamp(0.0, 1.0)


def _resize(x: torch.Tensor, size: tuple[int, int], method: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Each image downsampled with its drawn method (antialiased bicubic/bilinear, area = box mean)."""
    out = None
    for name in dict.fromkeys(camera.resize):
        if name == "area":
            resized = F.interpolate(x, size=size, mode="area")
        else:
            resized = F.interpolate(x, size=size, mode=name, antialias=True, align_corners=False)
        if out is None:
            out = resized
        else:
            pick = (method == RESIZE_METHODS.index(name)).to(x.device, non_blocking=True).view(-1, 1, 1, 1)
            out = torch.where(pick, resized, out)
    return out.clamp(0.0, 1.0)


def _noise(x: torch.Tensor, p: PassDraws, fields: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Gaussian noise (sigma in 8-bit levels) plus Poisson noise in its normal approximation (variance
    proportional to the intensity: ``scale * sqrt(255 x) / 255``), grey (one field for RGB) where drawn."""
    if fields is None:
        return x
    gray = p.gray.to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    z1, z2 = (torch.where(gray, z[:, :1].expand_as(z), z) for z in fields)
    sigma = _on(x.device, p.noise)[:, None] / 255.0
    shot = _on(x.device, p.poisson)[:, None] * torch.sqrt(x.clamp(min=0.0) * 255.0) / 255.0
    return (x + sigma * z1 + shot * z2).clamp(0.0, 1.0)


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _jpeg_step(images: torch.Tensor, p: PassDraws, camera: Camera) -> torch.Tensor:
    if camera.jpeg_p <= 0:
        return images
    coded = p.quality > 0
    compressed = jpeg(images, torch.where(coded, p.quality, 100.0).to(images.device, non_blocking=True))
    return torch.where(coded.to(images.device, non_blocking=True).view(-1, 1, 1, 1), compressed, images)
