"""Face images for a deployed model, made as ``prepare`` makes them (Pillow and numpy; no torch).

A gallery photo becomes the HR face (centre square crop, LANCZOS to the HR size); a probe already at the VLR
size is taken as it is, a larger one becomes its HR face and then the VLR face (antialiased bicubic), exactly
the faces a prepared dataset holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import UnidentifiedImageError

from engine.data.photos import is_image, load_rgb, make_vlr, to_hr
from engine.errors import DataError

UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError)


def _rgb(path: Path):
    try:
        return load_rgb(path)
    except DataError:
        raise
    except UNREADABLE as exc:
        raise DataError(f"{path}: cannot read this image ({type(exc).__name__}: {exc}); it is corrupt or not an "
                        "image. Replace it or leave it out, then run the command again.") from None


def hr_face(path: Path, hr_size: int) -> np.ndarray:
    """uint8 [hr, hr, 3]: the HR face of the photo at ``path``."""
    return np.asarray(to_hr(_rgb(path), hr_size), dtype=np.uint8)


def vlr_face(path: Path, vlr_size: tuple[int, int], hr_size: int) -> np.ndarray:
    """uint8 [h, w, 3]: a probe at the model's VLR size (``vlr_size`` = (w, h))."""
    image = _rgb(path)
    if image.size == tuple(vlr_size):
        return np.asarray(image, dtype=np.uint8)
    if min(image.size) < min(vlr_size):
        raise DataError(f"{path}: this image is {image.size[0]}x{image.size[1]}, smaller than the model's VLR size "
                        f"{vlr_size[0]}x{vlr_size[1]}; a probe must be at least that large (it is cropped and "
                        "resized as `prepare` does). Use a larger crop of the face.")
    return np.asarray(make_vlr(to_hr(image, hr_size), vlr_size), dtype=np.uint8)


def image_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every image named, a folder standing for the images inside it (sorted, hidden files left out)."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file()
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
            found += [p for p in inside if _image_or_error(p, named=False)]
        elif path.is_file():
            _image_or_error(path, named=True)
            found.append(path)
        else:
            raise DataError(f"{path} does not exist. Name image files or folders of images.")
    if not found:
        raise DataError(f"no image in {', '.join(str(p) for p in paths)}. Name image files or folders of images.")
    return found


def _image_or_error(path: Path, named: bool) -> bool:
    """Whether ``path`` is an image (a corrupt file with an image suffix is a DataError). A file the user
    ``named`` that is no image is an error; one found inside a named folder (a README) is skipped."""
    if is_image(path):
        return True
    if named:
        raise DataError(f"{path}: cannot read this image (not an image Pillow can open, or corrupt). Replace it or "
                        "leave it out, then run the command again.")
    return False
