"""Writing a dataset in the layout: HR/VLR pairs, staged in a temporary folder then renamed into place."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

from engine.data.layout import HR_DIR, MANIFEST, SPLITS, VLR_DIR, split_dir
from engine.data.photos import make_vlr
from engine.errors import DataError
from engine.io.atomic import destination_state, staged_folder


def make_split_dirs(root: Path, also: tuple[str, ...] | list[str] = ()) -> None:
    """The folders of the three splits, and of the extra splits in ``also`` (unlabelled, distractors)."""
    for split in dict.fromkeys((*SPLITS, *also)):
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


def check_destination(dst: Path, force: bool = False) -> None:
    """``dst`` is new or an empty folder; with ``force`` it may also hold a dataset (one with a manifest.json)."""
    dst = Path(dst).resolve() if Path(dst).is_symlink() else Path(dst)   # a link: the folder it names
    state = destination_state(dst, MANIFEST)
    if state != "free":
        if force and state == "marked":
            return
        held = f"it holds a dataset ({on_disk(dst)})" if state == "marked" else "it is not an empty folder"
        raise DataError(f"Destination {dst} already exists and {held}. One destination holds one dataset: choose a "
                        "new folder (it is created), delete this one first, or (prepare) pass --force to replace "
                        "a dataset (only a folder with a manifest.json is replaced).")


@contextmanager
def staged_dir(dst: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``dst``; on success rename it to ``dst``, on error delete it
    (:func:`engine.io.atomic.staged_folder`; ``replace``: a dataset there goes once the new one is whole)."""
    def taken(path: Path) -> Exception:
        return DataError(f"{path} was written by another process while this dataset was made ({on_disk(path)}); "
                         "this dataset was not saved. One destination holds one dataset: give another "
                         "destination, or delete that one and run again.")
    with staged_folder(dst, replace_marker=MANIFEST if replace else None, taken=taken) as tmp:
        yield tmp


def on_disk(root: Path) -> str:
    """What a dataset folder really holds, from its manifest (for messages)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        vlr, splits = manifest.get("vlr_size"), manifest.get("splits") or {}
        images = sum(int(s.get("images", 0)) for s in splits.values() if isinstance(s, dict))
        return f"on disk: VLR {vlr[0]}x{vlr[1]}, {images} images"
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError):
        return "on disk: no readable manifest.json"
