"""The ``Preset`` value: validated from a TOML mapping, turned back into one, patched and compared."""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from engine.errors import PresetError
from engine.presets.schema import (FIELDS, SECTIONS, DataConfig, DegradeConfig, DSRConfig, EvalConfig, FieldInfo,
                                   FinetuneConfig, RuntimeConfig)

META_SECTION = "preset"
META_KEYS = ("name", "description", "derived_from")

# A preset name becomes part of run-directory and file names: a safe charset and length, no path parts.
NAME_RULE = "1 to 64 characters: letters, digits, '.', '_', '+' and '-', starting with a letter or digit"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
MAX_TEXT = 4096          # characters of any text value (a path, a description)
MAX_INT = 2**63 - 1      # whole numbers beyond this fit no setting (and crash torch/numpy)
QUOTE_LIMIT = 200        # characters of a value quoted back in an error message
CAMERA_KEYS = ("eval.probe_degrade",)   # camera specs (engine/data/camera/spec.py), checked when read
PATH_KEYS = ("data.root", "dsr.vgg19_weights", "dsr.init_weights", "runtime.edgeface_weights", "runtime.runs_dir")


@dataclass(frozen=True)
class Preset:
    name: str = "unnamed"
    description: str = ""
    derived_from: str = ""
    source: str = field(default="", compare=False)  # where it was read from (a path or "built-in NAME")
    data: DataConfig = field(default_factory=DataConfig)
    dsr: DSRConfig = field(default_factory=DSRConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def vlr_size(self) -> tuple[int, int]:
        """(width, height) of the VLR images."""
        return (self.data.vlr_width, self.data.vlr_height)

    def get(self, key: str) -> Any:
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)

    def values(self) -> dict[str, Any]:
        """Flat ``{"section.key": value}`` of every hyperparameter."""
        return {key: self.get(key) for key in FIELDS}

    def to_mapping(self) -> dict[str, Any]:
        """The TOML document of this preset (tuples become lists)."""
        doc: dict[str, Any] = {META_SECTION: {"name": self.name, "description": self.description}}
        if self.derived_from:
            doc[META_SECTION]["derived_from"] = self.derived_from
        for section in SECTIONS:
            doc[section] = {f.name: _to_toml(getattr(getattr(self, section), f.name))
                            for f in fields(getattr(self, section))}
        return doc

    def with_changes(self, changes: Mapping[str, Any], *, source: str = "--set") -> "Preset":
        """A copy with ``{"section.key": value}`` applied, each value validated like a file's."""
        sections = {s: {} for s in SECTIONS}
        for key, value in changes.items():
            info = _field_for(key, source)
            sections[info.section][info.name] = _check_value(info, value, source)
        return replace(self, **{s: replace(getattr(self, s), **kv) for s, kv in sections.items() if kv})

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, source: str, default_name: str = "unnamed") -> "Preset":
        """Validate a parsed TOML document. Missing keys take the schema defaults (the guide's 32x32).

        ``default_name`` (the file's stem) is made safe with :func:`safe_name`; an explicit
        ``preset.name`` must already follow :data:`NAME_RULE`.
        """
        for section, body in doc.items():
            if section != META_SECTION and section not in SECTIONS:
                raise PresetError(f"{source}: unknown section [{_key_text(section)}]"
                                  f"{_did_you_mean(section, [META_SECTION, *SECTIONS])}. "
                                  f"Valid sections: {', '.join([META_SECTION, *SECTIONS])}.")
            if not isinstance(body, Mapping):
                raise PresetError(f"{source}: '{section}' must be a table ([{section}]), not a {type(body).__name__}.")
        meta = dict(doc.get(META_SECTION, {}))
        for key, value in meta.items():
            if key not in META_KEYS:
                raise PresetError(f"{source}: unknown key '{META_SECTION}.{_key_text(key)}'"
                                  f"{_did_you_mean(key, META_KEYS)}. "
                                  f"Valid keys of [{META_SECTION}]: {', '.join(META_KEYS)}.")
            if not isinstance(value, str):
                raise PresetError(f"{source}: '{META_SECTION}.{key}' must be text in quotes, got {quote(value)}.")
            if key in ("name", "derived_from") and value:
                check_name(value, f"{source}: '{META_SECTION}.{key}'")
            _check_text(value, f"{source}: '{META_SECTION}.{key}'")
        changes = {}
        for section in SECTIONS:
            for key, value in doc.get(section, {}).items():
                changes[f"{section}.{key}"] = value
        preset = cls(name=meta.get("name") or safe_name(default_name), description=meta.get("description", ""),
                     derived_from=meta.get("derived_from", ""), source=source)
        return preset.with_changes(changes, source=source)


def diff(a: Preset, b: Preset) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every hyperparameter that differs, in schema order."""
    va, vb = a.values(), b.values()
    return [(key, va[key], vb[key]) for key in FIELDS if va[key] != vb[key]]


def check_name(name: str, where: str) -> str:
    """``name`` if it follows :data:`NAME_RULE`, else a ``PresetError`` at ``where``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise PresetError(f"{where} is {quote(name)}, which is not a valid preset name: names become parts of "
                          f"run-directory and file names, so they are {NAME_RULE} (no '/' or spaces). "
                          "Rename it, e.g. \"my-preset\".")
    return name


def safe_name(text: str) -> str:
    """``text`` (a file's stem) turned into a valid preset name (unsafe runs of characters become '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).lstrip("._+-")[:64].rstrip("-")
    return cleaned if _NAME_RE.fullmatch(cleaned) else "unnamed"


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (a 10 MB value is not echoed)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a deeply nested array; an int too long to print
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters written out"
        text = f"{text[:limit]}… ({size})"
    return text


def _key_text(key: Any) -> str:
    """A key name for a message: as is when short and printable, else quoted and capped."""
    return key if isinstance(key, str) and len(key) <= 100 and key.isprintable() else quote(key, 100)


def _field_for(key: str, source: str) -> FieldInfo:
    if key in FIELDS:
        return FIELDS[key]
    section = key.split(".", 1)[0]
    if "." not in key or section not in SECTIONS:
        raise PresetError(f"{source}: unknown key '{_key_text(key)}'{_did_you_mean(key, list(FIELDS))}. Keys are "
                          f"written section.name with a section among {', '.join(SECTIONS)}; "
                          "`vlr-workbench presets show cpu-demo` lists them all.")
    names = [k for k in FIELDS if k.startswith(section + ".")]
    raise PresetError(f"{source}: unknown key '{_key_text(key)}'{_did_you_mean(key, names)}. "
                      f"Valid keys of [{section}]: {', '.join(n.split('.', 1)[1] for n in names)}.")


def _did_you_mean(word: str, candidates) -> str:
    if not isinstance(word, str) or len(word) > 100:
        return ""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close and "." in word:  # try the bare name within all keys
        bare = {c.split(".", 1)[-1]: c for c in candidates}
        hits = difflib.get_close_matches(word.split(".", 1)[1], list(bare), n=1, cutoff=0.6)
        close = [bare[hits[0]]] if hits else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_value(info: FieldInfo, value: Any, source: str) -> Any:
    where = f"{source}: '{info.key}'"
    expect = f"Valid: {info.range_text()} ({info.help}). Built-in default: {_show(info.default)}."
    if info.type == "bool":
        if not isinstance(value, bool):
            raise PresetError(f"{where} must be true or false, got {quote(value)}. {expect}")
        return value
    if info.type == "str":
        if not isinstance(value, str):
            raise PresetError(f"{where} must be text in quotes, got {quote(value)}. {expect}")
        _check_text(value, where)
        if info.choices and value not in info.choices:
            raise PresetError(f"{where} is {quote(value)}{_did_you_mean(value, info.choices)}. {expect}")
        if info.pattern and not re.fullmatch(info.pattern[0], value):
            raise PresetError(f"{where} is {quote(value)}, which is not a value it takes. {expect}")
        if info.key in PATH_KEYS:
            _check_path_text(info, value, where)
        if info.key in CAMERA_KEYS and value:
            _check_camera_spec(value, where)
        return value
    if info.type == "range":
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(_is_number(v) for v in value)):
            raise PresetError(f"{where} must be a pair of numbers like [0.93, 1.07], got {quote(value)}. {expect}")
        pair = (_to_float(value[0], where, expect), _to_float(value[1], where, expect))
        for v in pair:
            _check_bounds(info, v, where, expect)
        if pair[0] > pair[1]:
            raise PresetError(f"{where} is {list(pair)}: low must not exceed high. {expect}")
        if info.whole and not all(v.is_integer() for v in pair):
            raise PresetError(f"{where} is {_show(pair)}: both ends must be whole numbers. {expect}")
        return pair
    if info.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise PresetError(f"{where} must be a whole number, got {quote(value)}. {expect}")
        if abs(value) > MAX_INT:
            raise PresetError(f"{where} is a {_digits(value)}-digit number, far too large. {expect}")
    elif info.type == "float":
        if not _is_number(value):
            raise PresetError(f"{where} must be a number, got {quote(value)}"
                              f"{' (remove the quotes)' if isinstance(value, str) else ''}. {expect}")
        value = _to_float(value, where, expect)
    _check_bounds(info, value, where, expect)
    return value


def _digits(value: int) -> int:
    return len(str(abs(value))) if abs(value) < 10**4000 else int(abs(value).bit_length() * 0.30103) + 1


def _to_float(value: int | float, where: str, expect: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise PresetError(f"{where} is a {_digits(value)}-digit number, far too large. {expect}") from None


def _check_camera_spec(value: str, where: str) -> None:
    from engine.data.camera.spec import parse_spec

    try:
        parse_spec(value)
    except ValueError as exc:
        raise PresetError(f"{where} is {quote(value)}, not a camera spec: {exc}.") from None


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise PresetError(f"{where} contains a NUL character (\\u0000 or \\x00), which no name or path may hold: "
                          f"{quote(value)}. Remove it.")
    if len(value) > MAX_TEXT:
        raise PresetError(f"{where} is {len(value)} characters long, more than the {MAX_TEXT} allowed: "
                          f"{quote(value)}. Shorten it.")


def _check_path_text(info: FieldInfo, value: str, where: str) -> None:
    """A path setting: no part longer than a file name may be; ``runtime.runs_dir`` is not a file."""
    for part in value.replace(os.sep, "/").split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > 255:
            raise PresetError(f"{where} has a path part of {len(part)} characters; file systems allow 255 bytes "
                              f"per name: {quote(value)}. Fix the path.")
    if info.key == "runtime.runs_dir" and value:
        path = os.path.expanduser(value)
        if os.path.abspath(path) == os.path.dirname(os.path.abspath(path)):
            raise PresetError(f"{where} is {quote(value)}, the filesystem root: every run would become a folder "
                              "in it. Set runtime.runs_dir to a directory of its own, e.g. \"runs\" or "
                              "\"~/vlr-runs\".")
        if os.path.lexists(path) and not os.path.isdir(path):
            raise PresetError(f"{where} is {quote(value)}, which is a file, not a directory: run directories "
                              "are created inside it. Set runtime.runs_dir to a directory (it is created when "
                              "missing), e.g. \"runs\".")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_bounds(info: FieldInfo, value: float, where: str, expect: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise PresetError(f"{where} is {value}, which is not a finite number. {expect}")
    too_low = info.min is not None and (value <= info.min if info.min_exclusive else value < info.min)
    too_high = info.max is not None and (value >= info.max if info.max_exclusive else value > info.max)
    if too_low or too_high:
        raise PresetError(f"{where} is {_show_capped(value)}, out of range. {expect}")


def _show_capped(value: Any) -> str:
    text = _show(value)
    return text if len(text) <= QUOTE_LIMIT else f"{text[:QUOTE_LIMIT]}… ({len(text)} characters)"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _float_text(value: float) -> str:
    """Floats as the guide writes them: 1.3e-4, 2e-6, 0.025, 128.0 -> 128."""
    if value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.6g}".split("e") if "e" in f"{value:.6g}" else (f"{value:.6e}".split("e"))
        mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.1f}" if value.is_integer() and abs(value) < 1e6 else f"{value:g}"


def show_value(value: Any) -> str:
    """A value written as in a TOML file."""
    return _show(value)


def _to_toml(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
