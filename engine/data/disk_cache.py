"""Decoded splits on disk: decoding is paid once per dataset, not once per run.

A split decoded by :func:`engine.data.pairs.load_split` is kept under
``cache_dir()/decoded/<slot>/`` as two ``.npy`` files (``hr`` uint8 ``[N,3,H,H]``, ``vlr`` uint8
``[N,3,h,w]``) and a ``manifest.json``. A slot is one (dataset root, split, VLR size, HR size); the
manifest records the fingerprint of the split's files (every paired file name, byte size,
modification time and inode), so a changed, added or removed image rebuilds the slot in place.

Loading memory-maps the arrays (``numpy.load(mmap_mode="c")``: copy-on-write, so a stray write
never reaches the file) and wraps them as torch tensors without a copy: a second start costs a
directory listing and a few ``stat`` calls, and host memory holds only the pages the job touches
(the OS page cache, shared between runs and processes).

Torn writes are never trusted: each build writes its arrays under fresh names (temp file, fsync,
rename) and writes the manifest last, atomically; the manifest names its arrays and their exact
byte sizes. A missing, unreadable or inconsistent manifest or array (a crash mid-build, a
truncated file, a leftover temp file) means a rebuild, never a crash and never wrong pixels.
Set ``VLR_WORKBENCH_DISK_CACHE=0`` to decode in memory every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.io import atomic
from engine.errors import StorageError
from engine.io.paths import cache_dir

FORMAT_VERSION = 1
DISABLE_ENV = "VLR_WORKBENCH_DISK_CACHE"
MANIFEST = "manifest.json"
STALE_TEMP_SECONDS = 3600         # temp files older than this are leftovers of a crashed build
FREE_SPACE_MARGIN = 256 * 2**20   # bytes left free on the cache's disk after a build

DecodeFn = Callable[[Path, tuple[int, int], str], np.ndarray]  # (path, (w, h), kind) -> uint8 [h, w, 3]
ProgressFn = Callable[[int, int], None]
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class SplitFiles:
    """What identifies a split's decoded pixels: where, which sizes, and every paired file's stat."""

    root: Path
    split: str
    hr_dir: Path
    vlr_dir: Path
    names: list[str]
    vlr_size: tuple[int, int]  # (width, height)
    hr_size: int

    @property
    def slot(self) -> str:
        """The slot directory name: one per (root, split, sizes); a rebuild replaces it."""
        text = json.dumps([str(self.root), self.split, list(self.vlr_size), self.hr_size])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def fingerprint(self) -> str:
        """sha256 over (name, size, mtime, ctime, inode) of every HR and VLR file (symlinks followed).

        ctime and the inode also change when a file is replaced by a rename or rewritten within the
        file system's timestamp granularity.
        """
        digest = hashlib.sha256(f"v{FORMAT_VERSION}".encode())
        for folder in (self.hr_dir, self.vlr_dir):
            for name in self.names:
                st = os.stat(folder / name)
                digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
        return digest.hexdigest()


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def decoded_dir() -> Path:
    return cache_dir() / "decoded"


def load_or_build(files: SplitFiles, decode: DecodeFn, progress: ProgressFn | None = None,
                  log: LogFn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(hr, vlr) uint8 NCHW tensors of ``files.names`` in order: memory-mapped from the cache when its
    manifest matches the files, else decoded (``decode`` raises for a bad image) and cached.

    ``progress(done, total)`` counts decoded files (HR then VLR, ``total`` = 2 x pairs); a cache
    hit reports ``(total, total)`` at once. When the cache cannot be written (no space, read-only
    directory) the split is decoded in memory and ``log`` says why.
    """
    say = log or (lambda message: None)
    total = 2 * len(files.names)
    if not enabled():
        return _decode_in_memory(files, decode, progress)
    slot = decoded_dir() / files.slot
    fingerprint = files.fingerprint()
    hit = _read(slot, fingerprint, files)
    if hit is not None:
        if progress is not None:
            progress(total, total)
        return hit
    needed = len(files.names) * 3 * (files.hr_size ** 2 + files.vlr_size[0] * files.vlr_size[1])
    try:
        slot.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(slot).free
        if free < needed + FREE_SPACE_MARGIN:
            say(f"decoded cache: {needed / 2**30:.2f} GiB needed but {free / 2**30:.2f} GiB free under "
                f"{decoded_dir()}; decoding into memory instead (free space there, or set "
                f"VLR_WORKBENCH_CACHE_DIR to a larger disk)")
            return _decode_in_memory(files, decode, progress)
    except OSError as exc:
        say(f"decoded cache: cannot use {slot} ({exc}); decoding into memory instead")
        return _decode_in_memory(files, decode, progress)
    say(f"decoded cache: decoding {files.split} ({len(files.names)} pairs, {needed / 2**20:.0f} MiB) into {slot}")
    try:
        return _build(slot, fingerprint, files, decode, progress)
    except (OSError, StorageError) as exc:  # a full disk or a vanished directory mid-build: the job goes on
        say(f"decoded cache: writing {slot} failed ({exc}); decoding into memory instead")
        return _decode_in_memory(files, decode, progress)


# ----------------------------------------------------------------------------- reading


def _read(slot: Path, fingerprint: str, files: SplitFiles) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached arrays when everything checks out, else None (the caller rebuilds)."""
    try:
        manifest = json.loads((slot / MANIFEST).read_text())
        if (manifest.get("version") != FORMAT_VERSION or manifest.get("fingerprint") != fingerprint
                or manifest.get("names") != files.names):
            return None
        n = len(files.names)
        shapes = {"hr": (n, 3, files.hr_size, files.hr_size), "vlr": (n, 3, files.vlr_size[1], files.vlr_size[0])}
        tensors = []
        for kind in ("hr", "vlr"):
            entry = manifest[kind]
            path = slot / entry["file"]
            if Path(entry["file"]).name != entry["file"] or path.stat().st_size != entry["bytes"]:
                return None
            array = np.load(path, mmap_mode="c", allow_pickle=False)
            if array.dtype != np.uint8 or tuple(array.shape) != shapes[kind] or not array.flags.c_contiguous:
                return None
            tensors.append(_as_tensor(array))
        return tensors[0], tensors[1]
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # a copy-on-write map is writable; torch warns only for read-only ones
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


# ----------------------------------------------------------------------------- building


def _build(slot: Path, fingerprint: str, files: SplitFiles, decode: DecodeFn,
           progress: ProgressFn | None) -> tuple[torch.Tensor, torch.Tensor]:
    (slot / MANIFEST).unlink(missing_ok=True)  # from now on the slot is untrusted until the new manifest lands
    _remove_leftovers(slot)
    build = uuid.uuid4().hex[:12]
    n, total = len(files.names), 2 * len(files.names)
    entries = {}
    for kind, folder, size, offset in (("hr", files.hr_dir, (files.hr_size, files.hr_size), 0),
                                       ("vlr", files.vlr_dir, files.vlr_size, n)):
        final = slot / f"{kind}-{build}.npy"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{kind}-{build}.{atomic.owner_tag()}.", suffix=".tmp", dir=slot)
        os.close(fd)
        try:
            array = np.lib.format.open_memmap(tmp_name, mode="w+", dtype=np.uint8, shape=(n, 3, size[1], size[0]))
            _decode_into(array, [folder / name for name in files.names], size, kind.upper(), decode, progress,
                         offset, total)
            array.flush()
            del array
            with open(tmp_name, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        entries[kind] = {"file": final.name, "bytes": final.stat().st_size}
    manifest = {"version": FORMAT_VERSION, "fingerprint": fingerprint, "root": str(files.root), "split": files.split,
                "vlr_size": list(files.vlr_size), "hr_size": files.hr_size, "names": files.names,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **entries}
    atomic.write_json(slot / MANIFEST, manifest)
    keep = {entry["file"] for entry in entries.values()}
    for old in slot.glob("*.npy"):  # arrays of earlier builds (their maps in other processes stay valid)
        if old.name not in keep:
            old.unlink(missing_ok=True)
    hit = _read(slot, fingerprint, files)
    if hit is None:  # another process rebuilt the slot at the same moment: trust neither, decode again
        return _decode_in_memory(files, decode, None)
    return hit


def _remove_leftovers(slot: Path) -> None:
    """Delete the temporary arrays of builds killed mid-way (a live build's, of this host or another, stay)."""
    for tmp in slot.glob(".*.tmp"):
        if atomic.left_by_dead_writer(tmp, STALE_TEMP_SECONDS):
            tmp.unlink(missing_ok=True)


def _decode_in_memory(files: SplitFiles, decode: DecodeFn,
                      progress: ProgressFn | None) -> tuple[torch.Tensor, torch.Tensor]:
    n, total = len(files.names), 2 * len(files.names)
    hr = np.empty((n, 3, files.hr_size, files.hr_size), dtype=np.uint8)
    vlr = np.empty((n, 3, files.vlr_size[1], files.vlr_size[0]), dtype=np.uint8)
    _decode_into(hr, [files.hr_dir / m for m in files.names], (files.hr_size, files.hr_size), "HR", decode,
                 progress, 0, total)
    _decode_into(vlr, [files.vlr_dir / m for m in files.names], files.vlr_size, "VLR", decode, progress, n, total)
    return torch.from_numpy(hr), torch.from_numpy(vlr)


def _decode_into(out: np.ndarray, paths: list[Path], size: tuple[int, int], kind: str, decode: DecodeFn,
                 progress: ProgressFn | None, offset: int, total: int) -> None:
    """Decode ``paths`` (PIL releases the GIL: a thread pool) into ``out[i]`` as CHW."""
    workers = max(1, min(8, os.cpu_count() or 1))
    step = max(1, len(paths) // 100)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, array in enumerate(pool.map(lambda p: decode(p, size, kind), paths)):
            out[i] = array.transpose(2, 0, 1)
            if progress is not None and ((i + 1) % step == 0 or i + 1 == len(paths)):
                progress(offset + i + 1, total)
