"""Procedural demo faces: distinct identities whose cues are fine details, written in the layout.

Each identity draws its face shape, eye shape/spacing/tilt, iris colour, brow angle/arch/thickness,
nose, mouth and a few small marks (moles, freckles) from its own random stream; skin and hair
tones come from small palettes, so these coarse cues are shared by many identities. Each image
adds nuisance: a small shift, rotation and scale, expression (mouth curve, brow raise, eye
openness, gaze), illumination (gain, side light, colour cast), background and sensor noise.

The identity cues are a few pixels wide at 128x128, so an HR recogniser can tell identities apart
while a 16x16 (and largely a 32x32) antialiased downsample blurs them away: bicubic upscaling
cannot bring them back, which leaves room for a DSR model to win. Faces are drawn with PIL at
twice the HR size and reduced (antialiasing); everything is deterministic in the seed.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from engine.io import atomic
from engine.data.layout import MANIFEST, SPLITS
from engine.data.splitting import SPLIT_RULE, split_by_subject
from engine.data.photos import VLR_METHOD
from engine.data.writer import check_destination, make_split_dirs, staged_dir, write_pair
from engine.errors import DataError

ProgressFn = Callable[[int, int], None]

# Bump when the drawing changes: cached demo datasets are keyed by it.
DEMO_VERSION = 1
DEMO_TEST_FRACTION = 0.25
DEMO_VAL_FRACTION = 0.2
SUPERSAMPLE = 2

SKIN_TONES = ((226, 190, 160), (200, 158, 124), (165, 120, 90))
HAIR_TONES = ((52, 36, 28), (24, 22, 22), (120, 86, 52))
IRIS_TONES = ((92, 60, 36), (50, 36, 28), (70, 110, 150), (80, 120, 70))
LIP_TONES = ((170, 90, 90), (150, 80, 86))


@dataclass(frozen=True)
class Identity:
    """Identity parameters in HR pixels (128-scale); drawn once per identity."""
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    face_w: float
    face_h: float
    fringe: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    iris_r: float
    brow_gap: float
    brow_len: float
    brow_angle: float
    brow_arch: float
    brow_thick: float
    nose_len: float
    nose_w: float
    nostril_r: float
    mouth_y: float
    mouth_w: float
    lip_thick: float
    mouth_curve: float
    marks: tuple[tuple[float, float, float], ...]  # (x, y, radius)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.uniform(-amount, amount), 0, 255)) for c in colour)


def make_identity(seed: int, index: int) -> Identity:
    """Identity ``index`` of the demo set ``seed`` (independent of how many identities are drawn)."""
    rng = np.random.default_rng([seed, index, 1])
    u = rng.uniform
    marks = []
    for _ in range(int(rng.integers(2, 5))):  # moles on cheeks, forehead or chin
        marks.append((64 + u(-26, 26), 68 + u(-34, 34), u(1.2, 2.2)))
    if rng.random() < 0.6:  # a cluster of freckles on one or both cheeks
        for side in ((-1, 1) if rng.random() < 0.5 else (rng.choice((-1, 1)),)):
            cx, cy = 64 + side * u(16, 24), 74 + u(-3, 3)
            for _ in range(int(rng.integers(4, 9))):
                marks.append((cx + u(-6, 6), cy + u(-4, 4), u(0.6, 0.9)))
    return Identity(
        skin=_jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 4),
        hair=_jitter(rng, HAIR_TONES[rng.integers(len(HAIR_TONES))], 4),
        iris=IRIS_TONES[rng.integers(len(IRIS_TONES))],
        lips=LIP_TONES[rng.integers(len(LIP_TONES))],
        face_w=37 + u(-2.5, 2.5), face_h=47 + u(-2.5, 2.5), fringe=33 + u(-3, 3),
        eye_y=60 + u(-2.5, 2.5), eye_dx=15.5 + u(-3, 3), eye_w=6.5 + u(-1.6, 1.6), eye_h=3.2 + u(-1.0, 1.0),
        eye_tilt=u(-12, 12), iris_r=2.4 + u(-0.5, 0.5),
        brow_gap=8 + u(-2, 2), brow_len=14 + u(-3.5, 3.5), brow_angle=u(-16, 16), brow_arch=u(-2.5, 2.5),
        brow_thick=u(1.3, 3.5),
        nose_len=15 + u(-3.5, 3.5), nose_w=5 + u(-2, 2), nostril_r=u(0.9, 1.8),
        mouth_y=92 + u(-3, 3), mouth_w=11 + u(-3, 3), lip_thick=u(1.4, 3.8), mouth_curve=u(-2, 2),
        marks=tuple(marks),
    )


@dataclass(frozen=True)
class Nuisance:
    """Per-image variation that does not change who it is."""
    dx: float
    dy: float
    angle: float
    scale: float
    smile: float
    brow_raise: float
    eye_open: float
    gaze: float
    gain: float
    side_light: float
    cast: tuple[float, float, float]
    background: tuple[int, int, int]
    noise: float


def make_nuisance(seed: int, index: int, image: int) -> Nuisance:
    rng = np.random.default_rng([seed, index, image, 2])
    u = rng.uniform
    grey = u(120, 215)
    return Nuisance(dx=u(-3, 3), dy=u(-3, 3), angle=u(-5, 5), scale=u(0.96, 1.04), smile=u(-2.5, 2.5),
                    brow_raise=u(-1.5, 1.5), eye_open=u(0.7, 1.1), gaze=u(-1.2, 1.2), gain=u(0.8, 1.15),
                    side_light=u(-0.15, 0.15), cast=tuple(u(0.96, 1.04, size=3)),
                    background=tuple(int(grey + u(-12, 12)) for _ in range(3)), noise=u(1.0, 4.0))


def _rotate(points: list[tuple[float, float]], cx: float, cy: float, degrees: float) -> list[tuple[float, float]]:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, tilt: float, n: int = 24) -> list[tuple[float, float]]:
    pts = [(cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)]
    return _rotate(pts, cx, cy, tilt)


def _curve(x0: float, x1: float, y: float, bend: float, n: int = 9) -> list[tuple[float, float]]:
    """A parabola from (x0, y) to (x1, y) whose middle sits ``bend`` pixels lower."""
    return [(x0 + (x1 - x0) * t, y + bend * 4 * t * (1 - t)) for t in (k / (n - 1) for k in range(n))]


def render_face(ident: Identity, nuis: Nuisance, hr_size: int = 128) -> Image.Image:
    """One RGB face image of ``hr_size`` x ``hr_size``."""
    k = SUPERSAMPLE * hr_size / 128.0  # drawing scale: identity units are 128-scale pixels

    def P(points):
        return [(x * k, y * k) for x, y in points]

    def box(cx, cy, rx, ry):
        return [(cx - rx) * k, (cy - ry) * k, (cx + rx) * k, (cy + ry) * k]

    side = int(round(128 * k))
    img = Image.new("RGB", (side, side), nuis.background)
    d = ImageDraw.Draw(img)
    cx, cy = 64.0, 68.0
    shade = tuple(int(c * 0.88) for c in ident.skin)
    dark = tuple(int(c * 0.55) for c in ident.skin)
    # hair behind the head, neck, face, ears
    d.ellipse(box(cx, cy - 8, ident.face_w + 7, ident.face_h + 6), fill=ident.hair)
    d.rectangle([(cx - 14) * k, (cy + 30) * k, (cx + 14) * k, side], fill=shade)
    for s in (-1, 1):
        d.ellipse(box(cx + s * (ident.face_w + 1), ident.eye_y + 8, 4.5, 8), fill=shade)
    d.ellipse(box(cx, cy, ident.face_w, ident.face_h), fill=ident.skin)
    # fringe: the part of the hair ellipse above the hairline, over the forehead
    cap = [(x, y) for x, y in _ellipse_points(cx, cy - 8, ident.face_w + 7, ident.face_h + 6, 0.0, n=72)
           if y <= ident.fringe]
    d.polygon(P(cap), fill=ident.hair)
    # eyes and brows
    for s in (-1, 1):
        ex, ey = cx + s * ident.eye_dx, ident.eye_y
        tilt = s * ident.eye_tilt
        eye_h = ident.eye_h * nuis.eye_open
        d.polygon(P(_ellipse_points(ex, ey, ident.eye_w, eye_h, tilt)), fill=(240, 238, 232), outline=dark)
        ir = min(ident.iris_r, eye_h + 0.4)
        ix = ex + nuis.gaze
        d.ellipse(box(ix, ey, ir, ir), fill=ident.iris)
        d.ellipse(box(ix, ey, ir * 0.45, ir * 0.45), fill=(15, 12, 12))
        by = ey - ident.brow_gap - nuis.brow_raise
        inner, outer = ex - s * ident.brow_len * 0.45, ex + s * ident.brow_len * 0.55
        brow = _curve(inner, outer, by, -ident.brow_arch)
        brow = _rotate(brow, ex, by, -s * ident.brow_angle)
        d.line(P(brow), fill=ident.hair, width=max(1, int(round(ident.brow_thick * k))), joint="curve")
    # nose
    top, tip = ident.eye_y + 4, ident.eye_y + 4 + ident.nose_len
    d.line(P([(cx - 1.5, top), (cx - ident.nose_w * 0.5, tip - 2), (cx, tip)]), fill=shade,
           width=max(1, int(round(1.3 * k))))
    for s in (-1, 1):
        nx = cx + s * ident.nose_w * 0.55
        d.ellipse(box(nx, tip, ident.nostril_r, ident.nostril_r * 0.7), fill=dark)
    # mouth: upper and lower lip around a curve whose bend is identity + expression
    bend = ident.mouth_curve + nuis.smile
    x0, x1, my = cx - ident.mouth_w, cx + ident.mouth_w, ident.mouth_y
    upper = _curve(x0, x1, my, bend)
    lower = _curve(x1, x0, my + ident.lip_thick * 0.4, bend + ident.lip_thick)
    d.polygon(P(upper + lower), fill=ident.lips)
    d.line(P(upper), fill=tuple(int(c * 0.6) for c in ident.lips), width=max(1, int(round(0.9 * k))))
    # marks
    for mx, my_, r in ident.marks:
        d.ellipse(box(mx, my_, r, r), fill=dark)
    # pose: rotation and scale about the face centre, then a shift (one affine map, output -> input)
    a = math.radians(nuis.angle)
    c, s = math.cos(a) / nuis.scale, math.sin(a) / nuis.scale
    ox, oy = (cx + nuis.dx) * k, (cy + nuis.dy) * k
    matrix = (c, s, cx * k - c * ox - s * oy, -s, c, cy * k + s * ox - c * oy)
    img = img.transform((side, side), Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=nuis.background)
    img = img.reduce(SUPERSAMPLE) if side == SUPERSAMPLE * hr_size else img.resize((hr_size, hr_size), Image.BOX)
    return _light_and_noise(img, nuis)


def _light_and_noise(img: Image.Image, nuis: Nuisance) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    w = arr.shape[1]
    ramp = 1.0 + nuis.side_light * np.linspace(-1.0, 1.0, w, dtype=np.float32)
    arr = arr * (nuis.gain * ramp)[None, :, None] * np.asarray(nuis.cast, dtype=np.float32)
    seed = int(hashlib.sha256(repr(nuis).encode()).hexdigest()[:8], 16)
    arr = arr + np.random.default_rng(seed).normal(0.0, nuis.noise, arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def demo_name(index: int, image: int) -> str:
    """Layout file name: the subject (``demo0007``) before the first underscore."""
    return f"demo{index:04d}_{image:02d}.png"


def generate_demo_dataset(dst: Path | str, *, identities: int, per_identity: int, seed: int,
                          vlr_size: tuple[int, int], hr_size: int = 128, progress: ProgressFn | None = None,
                          test_fraction: float = DEMO_TEST_FRACTION,
                          val_fraction: float = DEMO_VAL_FRACTION) -> Path:
    """Write ``identities`` x ``per_identity`` demo faces to ``dst`` in the layout, with a manifest.

    ``dst`` must not exist (or be empty); the data is written to a temporary folder beside it and
    renamed into place. Splits follow :data:`engine.data.splitting.SPLIT_RULE`.
    """
    dst = Path(dst).expanduser()
    if identities < 4 or per_identity < 3:
        raise DataError(f"Demo data needs at least 4 identities and 3 images per identity (got {identities} x "
                        f"{per_identity}): raise data.demo_identities / data.demo_per_identity or --identities / "
                        f"--per-identity.")
    check_destination(dst)
    vlr_size = (int(vlr_size[0]), int(vlr_size[1]))
    items = {demo_name(i, 0).split("_")[0]: [(i, j) for j in range(per_identity)] for i in range(identities)}
    plan = split_by_subject(items, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    total = identities * per_identity
    with staged_dir(dst) as tmp:
        make_split_dirs(tmp)
        people = {i: make_identity(seed, i) for i in range(identities)}
        jobs = [(split, i, j) for split in SPLITS for _subject, (i, j) in plan[split]]

        def draw(job) -> None:
            split, i, j = job
            write_pair(tmp, split, demo_name(i, j), render_face(people[i], make_nuisance(seed, i, j), hr_size),
                       vlr_size)

        # Pillow releases the GIL while resampling and encoding: threads overlap those parts.
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            for done, _ in enumerate(pool.map(draw, jobs), start=1):
                if progress is not None:
                    progress(done, total)
        atomic.write_json(tmp / MANIFEST, {
            "source": "demo (procedurally drawn faces, engine.data.demo)",
            "demo_version": DEMO_VERSION, "seed": seed, "identities": identities, "per_identity": per_identity,
            "hr_size": [hr_size, hr_size], "vlr_size": list(vlr_size),
            "vlr_method": VLR_METHOD, "split_rule": SPLIT_RULE,
            "test_fraction": test_fraction, "val_fraction": val_fraction,
            "splits": {s: {"images": len(plan[s]), "subjects": len({sub for sub, _ in plan[s]})} for s in SPLITS},
        })
    return dst
