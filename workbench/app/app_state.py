"""The app's remembered state (the last used preset) in ``config_dir()/state.toml``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from engine.io import atomic
from engine.presets import config_dir


def state_path() -> Path:
    return config_dir() / "state.toml"


def read_last_preset() -> str | None:
    """The preset the app showed last, or None on first run (or when the file is unreadable)."""
    path = state_path()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    value = doc.get("last_preset")
    return value if isinstance(value, str) and value else None


def write_last_preset(name: str) -> None:
    atomic.write_text(state_path(), tomli_w.dumps({"last_preset": name}))
