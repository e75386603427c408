"""The guide's on-disk dataset layout.

``ROOT/{train,val,test}_processed/{hr_images,vlr_images}/FILE.png``: an HR image and its VLR
partner share a file name; the subject id is the file name up to the first underscore
(``001_01_01_010_00_crop_128.png`` -> ``001``).
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")
HR_DIR = "hr_images"
VLR_DIR = "vlr_images"
IMAGE_SUFFIX = ".png"
MANIFEST = "manifest.json"


def split_dir(root: Path | str, split: str) -> Path:
    """``ROOT/<split>_processed``."""
    return Path(root) / f"{split}_processed"


def subject_of(filename: str | Path) -> str:
    """The subject id of a layout file name: its stem up to the first underscore."""
    stem = Path(filename).stem if isinstance(filename, Path) else Path(str(filename)).stem
    return stem.split("_", 1)[0]


def parse_size(text: str) -> tuple[int, int]:
    """``"32x32"`` or ``"14x16"`` (width x height) -> ``(width, height)``; ValueError otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"expected WIDTHxHEIGHT such as 32x32 or 14x16, got {text!r}")
    return int(parts[0]), int(parts[1])
