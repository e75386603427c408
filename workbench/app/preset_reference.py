"""The reference a preset is compared with in the editor: the preset it derives from."""

from __future__ import annotations

from engine.errors import PresetError
from engine.presets import Preset, builtin_names, load


def base_preset(preset: Preset) -> tuple[Preset, str]:
    """The preset ``preset`` derives from (else the built-in of the same name, else the schema
    defaults), with the editor's column label."""
    if preset.derived_from:
        try:
            return load(preset.derived_from), f"from {preset.derived_from}"
        except PresetError:
            pass  # the parent was deleted or renamed: fall back below
    if preset.name in builtin_names():
        return load(preset.name), "built-in"
    return Preset(), "defaults"
