"""Per-user directories: configuration (presets, app state) and cache (generated demo data)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.presets.store import config_dir  # noqa: F401 - re-exported

CACHE_ENV = "VLR_WORKBENCH_CACHE_DIR"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vlr-workbench"
