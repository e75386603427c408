"""The guide's on-disk dataset layout.

``ROOT/{train,val,test}_processed/{hr_images,vlr_images}/FILE.png``: an HR image and its VLR
partner share a file name; the subject id is the file name up to the first underscore
(``001_01_01_010_00_crop_128.png`` -> ``001``).

Two optional extra splits, made by ``prepare --unlabelled DIR [--distractors N]`` (same folders,
one identity per file, no underscore in the names):

* ``unlabelled_processed``: faces without identity labels, for DSR training only (added to DSR's
  training pairs; fine-tuning, validation and evaluation never read them);
* ``distractors_processed``: faces held out of the unlabelled folder, never trained on, that
  ``evaluate --distractors N`` enrols in the gallery as extra identities with no probe.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val", "test")
UNLABELLED = "unlabelled"      # DSR training only
DISTRACTORS = "distractors"    # gallery distractors for evaluation only
EXTRA_SPLITS = (UNLABELLED, DISTRACTORS)
HR_DIR = "hr_images"
VLR_DIR = "vlr_images"
IMAGE_SUFFIX = ".png"
MANIFEST = "manifest.json"
MAX_SIDE = 4096  # pixels: a size on the command line or in a manifest beyond this is a typo


def split_dir(root: Path | str, split: str) -> Path:
    """``ROOT/<split>_processed``."""
    return Path(root) / f"{split}_processed"


def has_split(root: Path | str, split: str) -> bool:
    """Whether the dataset holds ``split`` (an optional extra split is absent from most datasets)."""
    return (split_dir(root, split) / HR_DIR).is_dir()


def subject_of(filename: str | Path) -> str:
    """The subject id of a layout file name: its stem up to the first underscore."""
    stem = Path(filename).stem if isinstance(filename, Path) else Path(str(filename)).stem
    return stem.split("_", 1)[0]


def parse_size(text: str) -> tuple[int, int]:
    """``"32x32"`` or ``"14x16"`` (width x height) -> ``(width, height)``; ValueError otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 4 and 0 < int(p) <= MAX_SIDE
                                  for p in parts):
        shown = text if len(text) <= 50 else text[:50] + "…"
        raise ValueError(f"expected WIDTHxHEIGHT such as 32x32 or 14x16 (each 1 to {MAX_SIDE}), got {shown!r}")
    return int(parts[0]), int(parts[1])
