"""Text typed in the preset editor -> a preset value, and back."""

from __future__ import annotations

import tomllib
from typing import Any

from engine.presets import show_value


def parse_value(text: str) -> Any:
    """Read ``text`` as a TOML value (``1e-3``, ``true``, ``[0.9, 1.1]``, ``"cpu"``); bare text stays text."""
    stripped = text.strip()
    try:
        return tomllib.loads(f"value = {stripped}")["value"]
    except tomllib.TOMLDecodeError:
        return stripped


def edit_text(value: Any) -> str:
    """A value as the user would type it (strings without quotes)."""
    return value if isinstance(value, str) else show_value(value)
