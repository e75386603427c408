"""Where presets live, and reading/writing them.

- Built-ins: ``presets/*.toml`` of the source tree, shipped inside the wheel as
  ``engine/_builtin_presets``; read-only.
- User presets: ``$VLR_WORKBENCH_CONFIG_DIR/presets`` or ``$XDG_CONFIG_HOME/vlr-workbench/presets``
  (default ``~/.config/vlr-workbench/presets``).
- Any path ending in ``.toml`` or containing a path separator.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import tomli_w

from engine import atomic
from engine.errors import PresetError
from engine.presets.preset import Preset

CONFIG_ENV = "VLR_WORKBENCH_CONFIG_DIR"
_ENGINE_DIR = Path(__file__).resolve().parent.parent


def builtin_dir() -> Path:
    """The directory of the built-in presets, in a wheel install or a source checkout."""
    for candidate in (_ENGINE_DIR / "_builtin_presets", _ENGINE_DIR.parent / "presets"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise PresetError(f"the built-in presets are missing: looked in {_ENGINE_DIR / '_builtin_presets'} and "
                      f"{_ENGINE_DIR.parent / 'presets'}. Reinstall vlr-workbench (pip install .).")


def config_dir() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "vlr-workbench"


def user_dir() -> Path:
    return config_dir() / "presets"


@dataclass(frozen=True)
class PresetEntry:
    name: str
    path: Path
    builtin: bool


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def list_presets() -> list[PresetEntry]:
    """Built-ins first, then the user's presets (a user file never shadows a built-in name)."""
    entries = [PresetEntry(p.stem, p, True) for p in sorted(builtin_dir().glob("*.toml"))]
    taken = {e.name for e in entries}
    if user_dir().is_dir():
        entries += [PresetEntry(p.stem, p, False) for p in sorted(user_dir().glob("*.toml")) if p.stem not in taken]
    return entries


def is_path(ref: str) -> bool:
    return ref.endswith(".toml") or os.sep in ref or "/" in ref


def resolve(ref: str) -> PresetEntry:
    """A preset name (built-in or user) or a path to its file."""
    if is_path(ref) or Path(ref).is_file():
        path = Path(ref).expanduser()
        return PresetEntry(path.stem, path, _is_builtin_path(path))
    for entry in list_presets():
        if entry.name == ref:
            return entry
    names = ", ".join(e.name for e in list_presets())
    raise PresetError(f"no preset named '{ref}'. Known presets: {names}. Give a name from "
                      f"`vlr-workbench presets list` or a path to a .toml file.")


def load(ref: str | Path) -> Preset:
    """Read and validate a preset by name or path; raise ``PresetError`` with file, key and fix."""
    entry = resolve(str(ref))
    path = entry.path
    if not path.is_file():
        raise PresetError(f"{path}: preset file not found. Check the path, or list the known presets with "
                          "`vlr-workbench presets list`.")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: invalid TOML: {exc}. Fix the syntax at that line and column "
                          "(strings need quotes, tables are written [section]).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read the preset ({exc}). Check the file's permissions and "
                          "that it is UTF-8 text.") from None
    source = f"built-in preset {entry.name} ({path})" if entry.builtin else str(path)
    return Preset.from_mapping(doc, source=source, default_name=entry.name)


def save(preset: Preset, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``preset`` atomically as a user preset name or a path. Built-ins are never overwritten."""
    dest = str(dest)
    path = Path(dest).expanduser() if is_path(dest) else user_dir() / f"{dest}.toml"
    if _is_builtin_path(path) or (not is_path(dest) and dest in builtin_names()):
        raise PresetError(f"'{dest}' is a built-in preset and built-ins are read-only. Save your changes "
                          f"under a new name instead: `vlr-workbench presets save-as {dest} my-{dest}` "
                          "(in the app: save as).")
    if path.exists() and not overwrite:
        raise PresetError(f"{path} already exists. Choose another name, or pass --force to replace it.")
    named = replace(preset, name=path.stem)
    atomic.write_text(path, tomli_w.dumps(named.to_mapping()))
    return path


def derive(preset: Preset, new_name: str) -> Preset:
    """A copy named ``new_name`` that records which preset it came from."""
    return replace(preset, name=new_name, derived_from=preset.name)


def _is_builtin_path(path: Path) -> bool:
    try:
        return path.resolve().parent == builtin_dir().resolve()
    except PresetError:
        return False
