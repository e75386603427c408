"""Presets: the typed schema, validation, the built-in/user stores, diffs."""

from engine.presets.preset import Preset, check_name, diff, quote, safe_name, show_value
from engine.presets.schema import FIELDS, SECTIONS, FieldInfo, iter_fields
from engine.presets.store import (builtin_names, builtin_origin, check_save_target, config_dir, derive, list_presets,
                                  load, resolve, save, user_dir)

__all__ = ["Preset", "check_name", "diff", "quote", "safe_name", "show_value", "FIELDS", "SECTIONS", "FieldInfo", "iter_fields", "builtin_names", "check_save_target",
           "builtin_origin", "config_dir", "derive", "list_presets", "load", "resolve", "save", "user_dir"]
