"""Face photos as files: which files are images, whose face each is, and the HR/VLR crops ``prepare`` makes.

Pillow and numpy only (no torch): ``enroll`` and ``identify`` read photos with these functions on a machine
that has ONNX Runtime and no PyTorch, so that a deployed model sees faces made exactly as ``prepare`` made
the faces it was trained and evaluated on.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.data.pixels import to_rgb8
from engine.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})   # the layout's files
SOURCE_SUFFIXES = IMAGE_SUFFIXES | {".gif", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2", ".tga"}
VLR_METHOD = ("PIL Image.resize(HR, (w, h), Image.BICUBIC): Pillow widens the bicubic kernel by the "
              "downscale factor, so this is an antialiased bicubic downsample (like torch interpolate "
              "with antialias=True)")


def safe_token(text: str, keep: str = "") -> str:
    """A file-name-safe token; without underscores (the layout's subject separator) unless ``keep="_"``."""
    return re.sub(rf"[^A-Za-z0-9.{keep}-]+", "-", text).strip("-.") or "x"


MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485   # Pillow's limit, as check-data (and training) reads images


@contextlib.contextmanager
def open_photo(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` (header only), refusing an image over :data:`MAX_PIXELS` before any decode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            image = None
    with contextlib.ExitStack() as closing:
        if image is not None:
            closing.enter_context(image)
        size = image.size if image is not None else _header_size(path)
        if size is None or size[0] * size[1] > MAX_PIXELS:
            shown = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
            raise DataError(f"{path}: this image is {shown}, over the {MAX_PIXELS:,}-pixel limit "
                            "images are read with (decoding it would take gigabytes of memory); it was not decoded. "
                            "Downscale it (faces need no more than a few hundred pixels a side) or move it out of "
                            "the folder, then run the command again.")
        yield image


def _header_size(path: Path) -> tuple[int, int] | None:
    """The size a refused bomb's header states (Pillow raised before telling it). Header only, never decoded;
    called while collecting the source images, before any decoding thread starts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as image:
                return image.size
        except Exception:  # noqa: BLE001 - only the message's size is at stake
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def is_image(path: Path) -> bool:
    if broken_link(path):
        return False
    try:
        with open_photo(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if path.suffix.lower() in SOURCE_SUFFIXES:
            raise DataError(f"{path}: cannot read this image (unreadable or corrupt). Delete or replace it, "
                            f"then run the command again.") from None
        return False


def broken_link(path: Path) -> bool:
    """A symbolic link to a missing file or a loop of links (skipped and listed, like a non-image)."""
    try:
        os.stat(path)
        return False
    except OSError:
        return os.path.islink(path)


def collect_images(src: Path) -> tuple[dict[str, list[tuple[Path, str]]], list[str]]:
    """``({subject: [(path, output name)]}, skipped file names)`` from ``src`` (see the module doc).

    Broken symbolic links (missing target or a loop) are skipped and listed like non-image files;
    links to folders are not followed inside a subject's folder (a loop could recurse forever).
    """
    found: dict[str, list[tuple[Path, str]]] = {}
    owner: dict[str, str] = {}
    skipped: list[str] = []

    def add(subject_raw: str, path: Path, rest: str) -> None:
        subject = safe_token(subject_raw)
        if owner.setdefault(subject, subject_raw) != subject_raw:
            raise DataError(f"Subjects '{owner[subject]}' and '{subject_raw}' in {src} both become '{subject}' "
                            f"in the layout (subject ids may not contain '_' or spaces). Rename one of them.")
        found.setdefault(subject, []).append((path, rest))

    for entry in sorted(src.iterdir()):
        if entry.name.startswith("."):
            continue
        if broken_link(entry):
            skipped.append(f"{entry.name} (broken symbolic link)")
            continue
        if entry.is_dir():
            for path in sorted(p for p in entry.rglob("*") if not p.name.startswith(".")
                               and (p.is_file() or broken_link(p))):
                if broken_link(path):
                    skipped.append(f"{path.relative_to(src)} (broken symbolic link)")
                elif is_image(path):
                    parts = path.relative_to(entry).with_suffix("").parts
                    add(entry.name, path, "-".join(safe_token(part, "_") for part in parts))
                else:
                    skipped.append(str(path.relative_to(src)))
        elif entry.is_file():
            if not is_image(entry):
                skipped.append(entry.name)
                continue
            stem = entry.stem if entry.suffix.lower() in SOURCE_SUFFIXES else entry.name
            subject_raw, _sep, rest = re.match(r"([^_.]*)([_.]?)(.*)$", stem).groups()
            add(subject_raw or stem, entry, safe_token(rest, "_") if rest else "img")
    return found, skipped


def load_rgb(path: Path) -> Image.Image:
    """The photo at ``path`` as 8-bit RGB, EXIF orientation applied (16-bit greyscale scaled, not clipped)."""
    with open_photo(path) as image:
        return to_rgb8(ImageOps.exif_transpose(image))


def to_hr(image: Image.Image, hr_size: int) -> Image.Image:
    """Centre square crop, then LANCZOS resize to ``hr_size`` x ``hr_size``."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((hr_size, hr_size), Image.LANCZOS)


def make_vlr(hr: Image.Image, vlr_size: tuple[int, int]) -> Image.Image:
    """The VLR partner of an HR image by antialiased bicubic downsampling (``vlr_size`` = (w, h))."""
    return hr.resize(tuple(vlr_size), Image.BICUBIC)
