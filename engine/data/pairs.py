"""Load one split of the layout into compact uint8 tensors, checking pairing, sizes and decoding.

A split is decoded once per dataset (PIL in a thread pool) into ``hr`` ``uint8 [N,3,H,H]`` and
``vlr`` ``uint8 [N,3,h,w]``, kept memory-mapped on disk by :mod:`engine.data.disk_cache` for later
runs; training epochs then index these tensors (on the CPU or moved to the GPU with
:meth:`PairedSplit.to`) and do no file I/O or per-image Python work. A second :func:`load_split` in
the same process returns the cached tensors while no file in the split changed (name, size and
modification time of every file are compared).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from engine.data import disk_cache
from engine.data.layout import EXTRA_SPLITS, HR_DIR, SPLITS, UNLABELLED, VLR_DIR, has_split, split_dir, subject_of
from engine.data.photos import IMAGE_SUFFIXES
from engine.data.pixels import to_rgb8
from engine.errors import DataError

ProgressFn = Callable[[int, int], None]

_FIX_LAYOUT = ("Recreate the dataset with `vlr-workbench prepare SRC DST --vlr WxH` (or `vlr-workbench "
               "demo-data DST`), or point data.root at a folder laid out as "
               "ROOT/{train,val,test}_processed/{hr_images,vlr_images}/FILE.png.")


@dataclass
class PairedSplit:
    """One split held in memory: paired HR/VLR uint8 images, names and integer labels.

    The tensors may be shared with the in-process cache: treat them as read-only.
    """

    split: str
    root: Path
    names: list[str]
    subjects: list[str]
    classes: list[str]
    labels: torch.Tensor  # int64 [N], index into ``classes``
    hr: torch.Tensor      # uint8 [N, 3, H, H]
    vlr: torch.Tensor     # uint8 [N, 3, h, w]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_subjects(self) -> int:
        return len(self.classes)

    @property
    def vlr_size(self) -> tuple[int, int]:
        """(width, height) of the VLR images."""
        return int(self.vlr.shape[-1]), int(self.vlr.shape[-2])

    @property
    def hr_size(self) -> int:
        return int(self.hr.shape[-1])

    def to(self, device: torch.device | str) -> "PairedSplit":
        """A copy whose tensors live on ``device`` (names and classes are shared)."""
        return replace(self, labels=self.labels.to(device), hr=self.hr.to(device), vlr=self.vlr.to(device))

    def summary(self) -> str:
        return f"{self.split}: {len(self)} images, {self.num_subjects} subjects"


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (same shape and device)."""
    return images.float().div_(255.0)


CACHE_ENTRIES = 6  # splits kept decoded in this process (two datasets' train/val/test)
_cache: OrderedDict[tuple, PairedSplit] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every split loaded in this process."""
    with _cache_lock:
        _cache.clear()


def load_split(root: Path | str, split: str, vlr_size: tuple[int, int], hr_size: int = 128,
               progress: ProgressFn | None = None, log: Callable[[str], None] | None = None) -> PairedSplit:
    """Load ``ROOT/<split>_processed`` as a :class:`PairedSplit`.

    ``vlr_size`` is (width, height), like PIL's ``Image.size``. Raises :class:`DataError` naming the
    file and the fix for a missing split directory, an image without its partner, an image of the
    wrong size, or a file that cannot be decoded. ``progress(done, total)`` counts decoded files
    (HR then VLR: ``total`` is twice the number of pairs). Decoded pixels come from, or go to, the
    on-disk cache of :mod:`engine.data.disk_cache` (memory-mapped); ``log`` hears about its building
    and about a fallback to decoding in memory.
    """
    if split not in SPLITS + EXTRA_SPLITS:
        raise DataError(f"Unknown split '{split}'; the layout's splits are {', '.join(SPLITS + EXTRA_SPLITS)}.")
    root = Path(root).expanduser().resolve()
    vlr_size = (int(vlr_size[0]), int(vlr_size[1]))
    hr_dir, vlr_dir = split_dir(root, split) / HR_DIR, split_dir(root, split) / VLR_DIR
    for folder in (hr_dir, vlr_dir):
        if not folder.is_dir():
            raise DataError(f"Dataset folder {folder} is missing (dataset root {root}). {_FIX_LAYOUT}")
    key = (str(root), split, vlr_size, int(hr_size), _fingerprint(hr_dir), _fingerprint(vlr_dir))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
    if cached is not None:
        if progress is not None:
            progress(2 * len(cached), 2 * len(cached))
        return replace(cached)

    names = _paired_names(hr_dir, vlr_dir)
    files = disk_cache.SplitFiles(root, split, hr_dir, vlr_dir, names, vlr_size, int(hr_size))
    hr, vlr = disk_cache.load_or_build(files, _decode, progress, log)
    subjects = [subject_of(n) for n in names]
    classes = sorted(set(subjects))
    index = {s: i for i, s in enumerate(classes)}
    labels = torch.tensor([index[s] for s in subjects], dtype=torch.long)
    loaded = PairedSplit(split=split, root=root, names=names, subjects=subjects, classes=classes,
                         labels=labels, hr=hr, vlr=vlr)
    with _cache_lock:
        for old in [k for k in _cache if k[:4] == key[:4]]:  # an older version of the same split
            del _cache[old]
        _cache[key] = loaded
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return replace(loaded)


def load_dsr_train(root: Path | str, vlr_size: tuple[int, int], hr_size: int = 128,
                   log: Callable[[str], None] | None = None, unlabelled: bool = True) -> PairedSplit:
    """DSR's training pairs: the ``train`` split plus the ``unlabelled`` one when the dataset has it (and
    ``unlabelled``: the preset's ``dsr.unlabelled``).

    Super-resolution needs no identity labels, so the unlabelled faces (``prepare --unlabelled``)
    train DSR only; they keep label -1 and are not among ``classes``. Each split keeps its own slot in
    the decoded disk cache; only DSR training ever loads the unlabelled one.
    """
    train = load_split(root, "train", vlr_size, hr_size, log=log)
    if not unlabelled or not has_split(Path(root).expanduser(), UNLABELLED):
        return train
    extra = load_split(root, UNLABELLED, vlr_size, hr_size, log=log)
    return replace(train, names=train.names + extra.names, subjects=train.subjects + extra.subjects,
                   labels=torch.cat([train.labels, torch.full((len(extra),), -1, dtype=torch.long)]),
                   hr=torch.cat([train.hr, extra.hr]), vlr=torch.cat([train.vlr, extra.vlr]))


def _fingerprint(folder: Path) -> int:
    """Hash of (name, size, mtime) of every file: a replaced or rewritten image invalidates the cache.

    A broken symbolic link counts with its own (link) times; :func:`_image_files` reports it.
    """
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            try:
                st = entry.stat()
            except OSError:  # dangling link or a loop of links
                st = entry.stat(follow_symlinks=False)
            entries.append((entry.name, st.st_size, st.st_mtime_ns))
    return hash(tuple(sorted(entries)))


def _image_files(folder: Path) -> set[str]:
    """Names of the images in ``folder`` (hidden files and other suffixes ignored).

    A symbolic link that leads nowhere (missing target, or a loop of links) under an image name is
    refused with a ``DataError`` naming it, rather than skipped: a silently smaller dataset gives
    wrong numbers. A sub-folder with an image suffix is refused the same way.
    """
    names = set()
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.name.startswith(".") or Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        path = folder / entry.name
        try:
            os.stat(path)
        except OSError as exc:
            kind = "a loop of symbolic links" if exc.errno == errno.ELOOP else (
                f"a symbolic link to a missing file ({_link_target(path)})" if entry.is_symlink()
                else f"unreadable ({exc.strerror})")
            raise DataError(f"{path} is {kind}. Fix the link so that it points at the image, or delete it "
                            f"(with its partner in the other folder). {_FIX_LAYOUT}") from None
        if entry.is_dir():
            raise DataError(f"{path} is a folder, not an image. Move it out of {folder}. {_FIX_LAYOUT}")
        if entry.is_file():
            names.add(entry.name)
    return names


def _link_target(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        return "target unknown"
    return target if len(target) <= 200 else target[:200] + "…"


def _paired_names(hr_dir: Path, vlr_dir: Path) -> list[str]:
    hr_names, vlr_names = _image_files(hr_dir), _image_files(vlr_dir)
    for have, have_dir, lack_dir in ((hr_names - vlr_names, hr_dir, vlr_dir), (vlr_names - hr_names, vlr_dir, hr_dir)):
        if have:
            first = sorted(have)[0]
            more = f" (and {len(have) - 1} more)" if len(have) > 1 else ""
            raise DataError(f"{have_dir / first} has no partner {lack_dir / first}{more}: HR and VLR images are "
                            f"paired by file name. Add the missing file or remove the unpaired one. {_FIX_LAYOUT}")
    if not hr_names:
        raise DataError(f"{hr_dir} holds no images (.png). {_FIX_LAYOUT}")
    return sorted(hr_names)


def _decode(path: Path, size: tuple[int, int], kind: str) -> np.ndarray:
    """One image as ``uint8 [h, w, 3]``; greyscale, palette and 16-bit images are converted to 8-bit RGB."""
    try:
        with Image.open(path) as image:
            if image.size != size:
                raise DataError(f"{path}: {kind} image has size {image.size} (width, height), expected {size}. "
                                f"Every {kind} image must be {size[0]}x{size[1]}: check the preset's data sizes "
                                f"(data.vlr_width, data.vlr_height, data.hr_size) or re-create the dataset with "
                                f"`vlr-workbench prepare`.")
            image.load()
            return np.asarray(to_rgb8(image), dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as exc:
        raise DataError(f"{path}: cannot read this {kind} image ({exc}); the file is unreadable or truncated. "
                        f"Replace or delete it (with its partner), or re-create the dataset with "
                        f"`vlr-workbench prepare`.") from exc
