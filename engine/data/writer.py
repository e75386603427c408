"""Writing a dataset in the layout: HR/VLR pairs, staged in a temporary folder then renamed into place."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

from engine.data.layout import HR_DIR, SPLITS, VLR_DIR, split_dir
from engine.errors import DataError
from engine.io.atomic import make_temp_dir

VLR_METHOD = ("PIL Image.resize(HR, (w, h), Image.BICUBIC): Pillow widens the bicubic kernel by the "
              "downscale factor, so this is an antialiased bicubic downsample (like torch interpolate "
              "with antialias=True)")


def make_vlr(hr: Image.Image, vlr_size: tuple[int, int]) -> Image.Image:
    """The VLR partner of an HR image by antialiased bicubic downsampling (``vlr_size`` = (w, h))."""
    return hr.resize(tuple(vlr_size), Image.BICUBIC)


def make_split_dirs(root: Path) -> None:
    for split in SPLITS:
        for sub in (HR_DIR, VLR_DIR):
            (split_dir(root, split) / sub).mkdir(parents=True, exist_ok=True)


def write_pair(root: Path, split: str, name: str, hr: Image.Image, vlr_size: tuple[int, int]) -> None:
    """Save ``hr`` and its VLR partner as ``<split>_processed/{hr_images,vlr_images}/<name>``.

    Called inside :func:`staged_dir`, whose final rename makes the whole dataset appear at once,
    so the single files need no atomic write of their own.
    """
    folder = split_dir(root, split)
    hr.save(folder / HR_DIR / name, format="PNG", compress_level=1)
    make_vlr(hr, vlr_size).save(folder / VLR_DIR / name, format="PNG", compress_level=1)


def check_destination(dst: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError(f"Destination {dst} already exists and is not an empty folder. Choose a new folder "
                        f"(it is created) or delete this one first.")


@contextmanager
def staged_dir(dst: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dst``; on success rename it to ``dst``, on error delete it.

    If ``dst`` appeared meanwhile (another process finished the same dataset first) the staged
    copy is discarded and ``dst`` kept.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dst)  # the user's umask, not mkdtemp's 0700: a dataset is often shared
    try:
        yield tmp
        try:
            if dst.is_dir() and not any(dst.iterdir()):
                dst.rmdir()
            os.replace(tmp, dst)
        except OSError:
            if not dst.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
