"""Reading checkpoint and weight files without running code from them.

``torch.load(..., weights_only=False)`` unpickles anything, so a crafted ``.pt`` (a downloaded
"EdgeFace weights" file, a planted ``last.pt``) could run a shell command while being loaded.
Every load here uses torch's restricted unpickler (``weights_only=True``): tensors, quantised
tensors, dicts, lists, tuples, strings, numbers, None and the few globals in :data:`SAFE_GLOBALS`.
Everything this project writes (``best.pt``/``last.pt`` with optimiser, scheduler, EMA, GradScaler
and RNG state) and the EdgeFace authors' float and int8 ``_q`` state dicts need nothing more, so
the allow-list is empty; add a type there only when a checkpoint really holds one (the tests load
real ``last.pt`` files of both trainers). TorchScript archives go through ``torch.jit.load``, whose
own unpickler only rebuilds TorchScript values.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import WeightsError

# Globals (classes/functions) the restricted unpickler may use beyond torch's built-in safe set.
SAFE_GLOBALS: tuple[Any, ...] = ()

_NEVER_CODE = ("Checkpoints are read with torch's weights-only loader, which never runs code from a file, so a "
               "file that needs more than tensors, numbers and text is refused.")


def is_torchscript(path: str | Path) -> bool:
    """True for a ``torch.jit.save`` archive (a zip holding ``constants.pkl`` / ``code/``)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _reason(exc: BaseException) -> str:
    """A short reason: torch's weights-only errors are long and end in advice we must not give."""
    text = str(exc)
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            text = line.split("WeightsUnpickler error:", 1)[1]
            break
    else:
        text = text.strip().splitlines()[0] if text.strip() else ""
    text = text.strip()
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _checked_path(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise WeightsError(f"{what} {path} is a directory, not a file. Give the checkpoint file inside it "
                           "(e.g. best.pt or last.pt of a run directory).")
    if not path.is_file():
        raise WeightsError(f"{what} {path} not found (or not a regular file). Check the path.")
    return path


def load_checkpoint(path: str | Path, *, what: str, map_location: Any = "cpu") -> dict:
    """The dict stored in ``path`` (a ``torch.save`` file), loaded with the weights-only unpickler.

    ``what`` names the file's role in messages ("DSR checkpoint", "EdgeFace weights", ...). Any
    failure (missing, truncated, random bytes, a pickle wanting other globals, not a dict) raises
    :class:`WeightsError` naming the file.
    """
    path = _checked_path(path, what)
    if is_torchscript(path):
        raise WeightsError(f"{what} {path} is a TorchScript archive, not a checkpoint of this workbench or a "
                           "state dict. Give a state dict or a best.pt/last.pt of a run.")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure means the same thing to the user
        raise WeightsError(f"cannot read {what} {path} ({_reason(exc)}). The file may be damaged (truncated "
                           f"by a full disk or an interrupted copy) or not a checkpoint of ours. {_NEVER_CODE} "
                           "Use a best.pt/last.pt written by this workbench or the original weights "
                           "file.") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{what} {path} holds a {type(obj).__name__}, not a checkpoint dict or state dict. "
                           "Use a best.pt/last.pt written by this workbench or the original weights file.")
    return obj


def load_torchscript(path: str | Path, *, what: str, map_location: Any = "cpu") -> torch.jit.ScriptModule:
    """A TorchScript archive through ``torch.jit.load``; failures raise :class:`WeightsError` naming the file."""
    path = _checked_path(path, what)
    try:
        return torch.jit.load(str(path), map_location=map_location)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot load {what} {path} as TorchScript ({_reason(exc)}). The file may be damaged "
                           "or not a TorchScript archive; use the original file.") from None
