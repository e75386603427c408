"""Where presets live, and reading/writing them.

- Built-ins: ``presets/*.toml`` of the source tree, shipped inside the wheel as
  ``engine/_builtin_presets``; read-only.
- User presets: ``$VLR_WORKBENCH_CONFIG_DIR/presets`` or ``$XDG_CONFIG_HOME/vlr-workbench/presets``
  (default ``~/.config/vlr-workbench/presets``).
- Any path ending in ``.toml`` or containing a path separator.
"""

from __future__ import annotations

import errno
import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import tomli_w

from engine.io import atomic
from engine.errors import PresetError
from engine.presets.preset import NAME_RULE, Preset, check_name, quote, safe_name

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
    """Built-ins first, then the user's presets (a user file never shadows a built-in name); each group in
    the order of its names (cpu-real before cpu-real-labelled, as :func:`builtin_names`), not of file names."""
    entries = [PresetEntry(p.stem, p, True) for p in sorted(builtin_dir().glob("*.toml"), key=lambda p: p.stem)]
    taken = {e.name for e in entries}
    if user_dir().is_dir():
        entries += [PresetEntry(p.stem, p, False) for p in sorted(user_dir().glob("*.toml"), key=lambda p: p.stem)
                    if p.stem not in taken]
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


MAX_PRESET_BYTES = 1 << 20  # a preset is a few kB; anything over 1 MiB is not one


def load(ref: str | Path) -> Preset:
    """Read and validate a preset by name or path; raise ``PresetError`` with file, key and fix.

    A UTF-8 byte-order mark at the start is accepted (Windows editors write one).
    """
    if "\x00" in str(ref):
        raise PresetError(f"preset reference {quote(str(ref))} contains a NUL character. Give a preset name or "
                          "the path of a .toml file.")
    entry = resolve(str(ref))
    path = entry.path
    _check_preset_path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PRESET_BYTES + 1)
        if len(data) > MAX_PRESET_BYTES:
            raise PresetError(f"{path}: the file is over {MAX_PRESET_BYTES >> 20} MiB, far more than any preset "
                              "(a few kB). Give the right file.")
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise PresetError(f"{path}: cannot read the preset ({exc.strerror or exc}). Check the file's "
                          "permissions.") from None
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: the file is not UTF-8 text (byte {exc.start} cannot be decoded). Save it as "
                          "UTF-8.") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: invalid TOML: {explain_toml_error(text, exc)}") from None
    except RecursionError:
        raise PresetError(f"{path}: invalid preset: arrays or tables are nested too deeply to read. A preset "
                          "holds plain values and pairs like [0.93, 1.07]; fix the value with many '['.") from None
    except ValueError as exc:  # an integer of more than 4300 digits (Python's int conversion limit)
        what = "a number has more than 4300 digits" if "digits" in str(exc) else quote(str(exc), 120)
        raise PresetError(f"{path}: invalid preset: {what}. Numbers of a preset are small; fix the very long "
                          "number.") from None
    source = f"built-in preset {entry.name} ({path})" if entry.builtin else str(path)
    return Preset.from_mapping(doc, source=source, default_name=entry.name)


def _check_preset_path(path: Path) -> None:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PresetError(f"{path}: this path is a loop of symbolic links. Point the link at a real "
                              ".toml file.") from None
        if os.path.islink(path):
            raise PresetError(f"{path}: this symbolic link points at a missing file "
                              f"({quote(os.readlink(path))}). Fix or remove the link.") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise PresetError(f"{path}: preset file not found. Check the path, or list the known presets with "
                              "`vlr-workbench presets list`.") from None
        raise PresetError(f"{path}: cannot read the preset ({exc.strerror or exc}). Check the path and its "
                          "permissions.") from None
    except ValueError as exc:
        raise PresetError(f"{quote(str(path))}: not a usable path ({exc}).") from None
    if path.is_dir():
        raise PresetError(f"{path} is a directory, not a preset file. Give the path of a .toml file in it.")
    if not path.is_file():
        raise PresetError(f"{path} is not a regular file (a device or a pipe?). Give the path of a .toml file.")


_AT = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")
_KEY_LINE = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_TABLE_LINE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")


def explain_toml_error(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message plus the offending line and, for a duplicate, the key or table named."""
    message = str(exc)
    at = _AT.search(message)
    line_no = int(at.group(1)) if at and at.group(1) else None
    detail = ""
    if message.startswith("Cannot overwrite a value") or "twice" in message:
        duplicate = _first_duplicate(text)
        if duplicate:
            key, first, second = duplicate
            return (f"{key} appears twice (lines {first} and {second}). Keep one of them "
                    f"({_AT.sub('', message).strip()}).")
    if line_no is not None:
        lines = text.splitlines()
        if 1 <= line_no <= len(lines):
            detail = f" Line {line_no}: {quote(lines[line_no - 1], 120)}."
    if line_no == 1 and message.startswith("Invalid statement") and text[:1] == "\ufeff":
        detail += " (The file starts with a byte-order mark.)"
    return (f"{quote(message, 300)[1:-1]}.{detail} Fix the syntax there (strings need quotes, tables are "
            "written [section], each key once).")


def _first_duplicate(text: str) -> tuple[str, int, int] | None:
    """(``key 'section.name'`` or ``table [section]``, first line, second line) of the first repeat."""
    seen: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("[["):
            table = ""
            continue
        match = _TABLE_LINE.match(line)
        if match:
            table = re.sub(r"\s*\.\s*", ".", match.group(1))
            name = f"table [{table}]"
        else:
            match = _KEY_LINE.match(line)
            if not match:
                continue
            key = re.sub(r"\s*\.\s*", ".", match.group(1))
            name = f"key '{table + '.' if table else ''}{key}'"
        if name in seen:
            return quote(name, 120) if len(name) > 120 else name, seen[name], number
        seen[name] = number
    return None


def check_save_target(dest: str) -> None:
    """Refuse a destination that is neither a preset name (the naming rule: it goes to the preset store) nor a file
    path ending in .toml in a folder that exists (nothing makes folders): ``../../p`` is neither."""
    if dest.endswith(".toml"):
        folder = Path(dest).expanduser().parent
        if not folder.is_dir():
            raise PresetError(f"{quote(dest)}: the folder {folder} does not exist. Give a preset name, or a .toml path "
                              "in a folder that exists.")
        return
    if is_path(dest):
        raise PresetError(f"{quote(dest)} is neither a preset name nor a file path ending in .toml: give a name "
                          f"({NAME_RULE}) for the preset store, or a path like my-preset.toml.")
    check_name(dest, "the preset name")


def save(preset: Preset, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``preset`` atomically as a user preset name or a path. Built-ins are never overwritten.

    Without ``overwrite`` the file is created exclusively: of several concurrent saves of one
    name exactly one succeeds, the others get "already exists". With it, the file keeps its mode, and a
    symlinked preset is written through its link (the link stays).
    """
    dest = str(dest)
    if "\x00" in dest:
        raise PresetError(f"{quote(dest)}: a preset name or path cannot contain a NUL character.")
    if is_path(dest):
        path = Path(dest).expanduser()
        name = safe_name(path.stem)
    else:
        name = check_name(dest, "the preset name")
        path = user_dir() / f"{dest}.toml"
    if overwrite and path.is_symlink():   # replacing a linked preset writes the file it links to; the link stays
        path = Path(os.path.realpath(path))
    if _is_builtin_path(path) or (not is_path(dest) and dest in builtin_names()):
        raise PresetError(f"'{dest}' is a built-in preset and built-ins are read-only. Save your changes "
                          f"under a new name instead: `vlr-workbench presets save-as {dest} my-{dest}` "
                          "(in the app: save as).")
    if path.is_dir():
        raise PresetError(f"{path} is a directory. Give a file path ending in .toml, or a preset name.")
    exists = f"{path} already exists. Choose another name, or pass --force to replace it."
    if os.path.lexists(path) and not overwrite:
        raise PresetError(exists)
    text = tomli_w.dumps(replace(preset, name=name).to_mapping())
    if overwrite:
        atomic.write_text(path, text)
    else:
        try:
            atomic.create_exclusive(path, text.encode("utf-8"))
        except FileExistsError:
            raise PresetError(exists) from None
    return path


def derive(preset: Preset, new_name: str) -> Preset:
    """A copy named ``new_name`` that records which preset it came from."""
    return replace(preset, name=new_name, derived_from=preset.name)


def builtin_origin(preset: Preset) -> tuple[str | None, list[str]]:
    """(the built-in ``preset`` comes from, the user presets passed on the way), following ``derived_from``
    through user presets; (None, those passed) when the chain ends at a deleted or unreadable preset, or
    loops. A preset that derives from nothing is its own origin when it bears a built-in's name."""
    builtins = set(builtin_names())
    current, through, seen = preset, [], {preset.name}
    while current.derived_from:
        parent = current.derived_from
        if parent in builtins:
            return parent, through
        if parent in seen:
            break
        seen.add(parent)
        through.append(parent)
        try:
            current = load(parent)
        except PresetError:
            break
    return (preset.name, []) if preset.name in builtins else (None, through)


def _is_builtin_path(path: Path) -> bool:
    try:
        return path.resolve().parent == builtin_dir().resolve()
    except (PresetError, OSError, RuntimeError, ValueError):  # a loop of links, a NUL: not a built-in
        return False
