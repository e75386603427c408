"""Atomic file writes: write a temporary file in the target directory, fsync, then rename.

A crash or a full disk leaves either the old file or the new one, never half of either. A full,
read-only or unwritable disk becomes a :class:`StorageError` naming the path and the fix (the
temporary file is removed, an earlier file at the path is untouched). A writer killed mid-write
leaves its ``.NAME.XXXX.tmp`` file behind; :func:`remove_stale_temps` clears them.

File modes: a new file gets the mode any program of the user would give it (0666 less the umask,
or what a default ACL of the directory says; ``tempfile.mkstemp`` would make every file 0600 and
hide runs and presets from colleagues on a shared server). The kernel applies the umask when the
temporary file is created with mode 0666, so the umask is never read or changed (``os.umask`` is
process-wide and racy under threads). Replacing an existing file keeps that file's permissions.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import string
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.errors import StorageError

# errno values that mean "this place cannot take the file", not a bug.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
PATH_ERRNOS = {errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EISDIR}
_TORCH_WRITE_FAILURE = ("inline_container", "PytorchStreamWriter", "file write failed")
TEMP_PATTERN = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")  # .NAME.XXXXXXXX.tmp (open_temp, formerly mkstemp)
NEW_FILE_MODE = 0o666      # less the umask, applied by the kernel at creation: what open() and cp give a new file
_TEMP_CHARS = string.ascii_letters + string.digits + "_"
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
WHERE_TO_WRITE = ("Free space on that disk, or write elsewhere: runtime.runs_dir (or --run-dir) for runs, "
                  "$VLR_WORKBENCH_CONFIG_DIR for presets, $VLR_WORKBENCH_CACHE_DIR for the demo-data cache.")


def storage_error(exc: BaseException, path: Path | str) -> StorageError | None:
    """The user-facing error for a failed write of ``path``, or None when ``exc`` is not a storage fault.

    Covers OSError ENOSPC/EDQUOT/EROFS/EACCES/EPERM/EFBIG and torch.save's RuntimeError
    ("[enforce fail at inline_container.cc] ..." / "PytorchStreamWriter failed writing file").
    """
    path = Path(path)
    if isinstance(exc, OSError) and exc.errno in PATH_ERRNOS:
        return StorageError(f"cannot write {path}: {os.strerror(exc.errno).lower()}"
                            f"{f' ({exc.filename})' if exc.filename and str(exc.filename) != str(path) else ''}. "
                            "Choose another file or directory name (a file may stand where a directory is "
                            "needed).")
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                errno.EFBIG: "the file is too large for that file system",
                errno.EROFS: "the file system is read-only"}.get(exc.errno, "permission denied")
        return StorageError(f"cannot write {path}: {what} ({os.strerror(exc.errno)}). {WHERE_TO_WRITE}")
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURE):
        free = _free_bytes(path.parent)
        what = "the disk is full" if free is not None and free < 16 << 20 else "the write failed"
        return StorageError(f"cannot write {path}: {what} (torch.save could not write the file; "
                            f"{_mb(free)} free). {WHERE_TO_WRITE}")
    return None


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _mb(free: int | None) -> str:
    return "unknown space" if free is None else f"{free / 2**20:.1f} MiB"


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file stands where a directory is needed
        raise StorageError(f"cannot write {path}: {path.parent} (or a folder above it) is a file, not a "
                           "directory. Choose another location or move that file.") from None
    except OSError as exc:
        user_error = storage_error(exc, path)
        if user_error is None:
            raise
        raise user_error from None


def open_temp(path: Path) -> tuple[int, str]:
    """Create ``.NAME.XXXXXXXX.tmp`` beside ``path`` exclusively; (descriptor, its path).

    Like ``tempfile.mkstemp`` but with mode 0666, so the file gets the user's umask (or the
    directory's default ACL) like any file the user creates; the umask itself is not touched.
    """
    for _ in range(100):
        suffix = "".join(secrets.choice(_TEMP_CHARS) for _ in range(8))
        name = os.path.join(path.parent, f".{path.name}.{suffix}.tmp")
        try:
            return os.open(name, _TEMP_FLAGS, NEW_FILE_MODE), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(path.parent))


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host lives (one of another user counts as alive)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def owner_tag() -> str:
    """``PID@HOST``: put in the name of a temporary file or folder, so that a later run can tell a killed
    writer's leftover from the work of a live one (``left_by_dead_writer``)."""
    return f"{os.getpid()}@{re.sub(r'[^A-Za-z0-9.-]', '-', socket.gethostname())}"


_OWNER_TAG = re.compile(r"\.(\d+)@([A-Za-z0-9.-]+?)\.(?:[A-Za-z0-9_]{6,}\.tmp|partial)$")


def left_by_dead_writer(path: Path, max_age: float) -> bool:
    """True for a temporary file or folder whose writer is gone: the ``owner_tag`` in its name names a process
    of this host that has ended; without a tag of this host (older names, another host sharing the disk),
    when it is older than ``max_age`` seconds."""
    found = _OWNER_TAG.search(path.name)
    if found and found.group(2) == owner_tag().split("@", 1)[1]:
        return not pid_alive(int(found.group(1)))
    try:
        return time.time() - path.lstat().st_mtime > max_age
    except OSError:
        return False


PARTIAL_MAX_AGE = 24 * 3600   # an untagged or other host's .partial folder older than this is a leftover


def remove_stale_temp_dirs(path: Path, suffix: str = ".partial") -> list[Path]:
    """Delete the ``make_temp_dir`` folders beside ``path`` left by killed writers (``left_by_dead_writer``);
    a live writer's folder, and anything that is not a plain folder, stay."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if (entry.name.startswith(f".{path.name}.") and entry.name.endswith(suffix) and entry.is_dir()
                and not entry.is_symlink() and left_by_dead_writer(entry, PARTIAL_MAX_AGE)):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def make_temp_dir(path: Path, suffix: str = ".partial") -> Path:
    """Create the folder ``.NAME.XXXXXXXX.PID@HOST<suffix>`` beside ``path`` (to be renamed to ``path`` when
    complete; ``remove_stale_temp_dirs`` clears those of killed writers).

    Like ``tempfile.mkdtemp`` but with mode 0777 less the umask (mkdtemp's 0700 would make the
    finished folder, e.g. a prepared dataset, unreadable to everyone else).
    """
    for _ in range(100):
        name = "".join(secrets.choice(_TEMP_CHARS) for _ in range(8))
        folder = Path(path).parent / f".{Path(path).name}.{name}.{owner_tag()}{suffix}"
        try:
            folder.mkdir(0o777)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary folder name", str(Path(path).parent))


def destination_state(dst: Path, marker: str) -> str:
    """What :func:`staged_folder` may do with ``dst``: ``free`` (absent, or an empty folder), ``marked`` (a folder
    holding ``marker``: replaceable, when the caller allows it) or ``taken`` (a file, or a folder of other files).
    A link counts as the folder it names."""
    dst = Path(dst)
    dst = dst.resolve() if dst.is_symlink() else dst
    if not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        return "free"
    return "marked" if dst.is_dir() and (dst / marker).is_file() else "taken"


@contextlib.contextmanager
def staged_folder(dst: Path, *, replace_marker: str | None, taken: Callable[[Path], Exception]
                  ) -> Iterator[Path]:
    """Yield a temporary folder beside ``dst`` (a link: the folder it names); on success it is renamed to
    ``dst``, on error deleted, so that ``dst`` is either absent, the old folder or the whole new one.

    An empty ``dst`` is replaced; one holding ``replace_marker`` is set aside and deleted only once the new one
    is in place; otherwise (another writer finished first) ``taken(dst)`` is raised and ``dst`` kept.
    """
    dst = Path(dst)
    dst = dst.resolve() if dst.is_symlink() else dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(dst)   # left by a killed writer (never a live one's)
    tmp = make_temp_dir(dst)  # the user's umask, not mkdtemp's 0700: a dataset or a model is often shared
    try:
        yield tmp
        try:
            if dst.is_dir() and not any(dst.iterdir()):
                dst.rmdir()
            elif replace_marker and (dst / replace_marker).is_file():
                _replace_folder(tmp, dst)
                return
            os.replace(tmp, dst)
        except OSError:
            if not dst.is_dir():
                raise
            raise taken(dst) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_folder(tmp: Path, dst: Path) -> None:
    """``tmp`` becomes ``dst``; the folder there is set aside first and deleted only once that worked."""
    old = make_temp_dir(dst, ".replaced")
    os.replace(dst, old / "data")
    try:
        os.replace(tmp, dst)
    except OSError:
        os.replace(old / "data", dst)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)


def _keep_mode(fd: int, path: Path) -> None:
    """Give the temporary file the permissions of the file it will replace (if there is one)."""
    try:
        old = os.stat(path)
    except (OSError, ValueError):
        return
    if stat.S_ISREG(old.st_mode) and hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
        except OSError:  # a file system without modes (FAT, some network shares): the umask's mode stays
            pass


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    tmp_name = None
    _make_parent(path)
    try:
        fd, tmp_name = open_temp(path)
        _keep_mode(fd, path)
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        if tmp_name is not None:
            try:
                Path(tmp_name).unlink(missing_ok=True)
            except OSError:
                pass
        user_error = storage_error(exc, path) if isinstance(exc, Exception) else None
        if user_error is not None:
            raise user_error from None
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic_write(path, lambda h: h.write(data), "wb")


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(path: Path, obj: Any) -> Path:
    import torch

    return _atomic_write(path, lambda h: torch.save(obj, h), "wb")


def save_image(path: Path, image) -> Path:
    """Save a PIL image atomically (format from the suffix)."""
    fmt = Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"
    return _atomic_write(path, lambda h: image.save(h, format=fmt), "wb")


def create_exclusive(path: Path, data: bytes) -> Path:
    """Write ``path`` only if it does not exist yet; ``FileExistsError`` if it does (also under a race).

    The content is first written to a temporary file and then hard-linked to ``path`` (``link`` fails
    when the name exists), so exactly one of several concurrent writers succeeds and a reader never
    sees a half-written file. Where hard links are not supported, an ``O_EXCL`` placeholder claims
    the name before the atomic replace.
    """
    path = Path(path)
    tmp_name = None
    _make_parent(path)
    try:
        fd, tmp_name = open_temp(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, NEW_FILE_MODE))  # claim the name
            os.replace(tmp_name, path)
            tmp_name = None
    except FileExistsError:
        raise
    except Exception as exc:
        user_error = storage_error(exc, path)
        if user_error is not None:
            raise user_error from None
        raise
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    return path


def remove_stale_temps(folder: Path | str) -> list[Path]:
    """Delete the ``.NAME.XXXXXXXX.tmp`` files of this module left in ``folder`` by killed writers.

    Call it only while no other process writes into ``folder`` (a run directory owned by this
    process). Returns the removed paths; a missing folder or an undeletable file is ignored.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if TEMP_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed
