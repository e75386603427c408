"""The per-user cache directory (generated demo data); the config directory is engine.presets.config_dir."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VLR_WORKBENCH_CACHE_DIR"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vlr-workbench"
