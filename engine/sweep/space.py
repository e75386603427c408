"""The search space of a sweep: a TOML file of preset keys with ranges or choices, checked against the preset
schema before anything runs.

    [params]
    "dsr.learning_rate" = { low = 1e-4, high = 1e-3, log = true }
    "dsr.base_channels" = { choices = [16, 32] }
    "dsr.lambda_identity" = { low = 0.0, high = 0.4, step = 0.1 }

Listed trials (optional; with them [params] may be left out) are queued before the sampler's, each once per study
by its label: one lever at a time, e.g. against the base preset. A key of [params] a listed trial leaves out takes
the base preset's value; keys outside [params] are the trial's patch.

    [[trials]]
    label = "base"

    [[trials]]
    label = "6 DSR epochs"
    "dsr.epochs" = 6
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import PresetError, WorkbenchError
from engine.presets import FIELDS, Preset

SPEC_KEYS = {"low", "high", "log", "step", "choices"}


class SpaceError(WorkbenchError):
    """A search-space file that cannot be used as written."""


@dataclass(frozen=True)
class Param:
    key: str                      # a preset key, e.g. dsr.learning_rate
    kind: str                     # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """This parameter's value for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list[Any]:
        """The values a grid search tries (choices, or low..high by step)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.step is None:
            raise SpaceError(f"{self.key}: a grid search needs `step` (or `choices`) for every parameter.")
        count = int(round((self.high - self.low) / self.step)) + 1
        values = [self.low + i * self.step for i in range(count)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]


@dataclass(frozen=True)
class ListedTrial:
    label: str
    values: dict[str, Any]        # preset keys -> values; the rest is the base preset's


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: str
    listed: tuple[ListedTrial, ...] = ()

    def suggest(self, trial) -> dict[str, Any]:
        return {param.key: param.suggest(trial) for param in self.params}

    def grid(self) -> dict[str, list[Any]]:
        return {param.key: param.grid() for param in self.params}


def load_space(path: str | Path, preset: Preset) -> SearchSpace:
    """The search space in ``path``, every key and bound checked against ``preset``'s schema."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpaceError(f"search space {path} does not exist: write a TOML file with a [params] table, e.g. "
                         '`"dsr.learning_rate" = { low = 1e-4, high = 1e-3, log = true }`.') from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpaceError(f"search space {path} cannot be read: {exc}. Fix the TOML and run the sweep again.") from None
    unknown = sorted(set(doc) - {"params", "trials"})
    if unknown:
        raise SpaceError(f"search space {path}: unknown table(s) {', '.join(unknown)}; a space holds [params] "
                         "and [[trials]].")
    table, listed = doc.get("params", {}), doc.get("trials", [])
    if not isinstance(table, dict) or not (table or listed):
        raise SpaceError(f"search space {path} has no [params] table: list the preset keys to search, e.g. "
                         '`"dsr.learning_rate" = { low = 1e-4, high = 1e-3, log = true }` under [params] '
                         "(or list trials to run as [[trials]] tables).")
    params = tuple(_param(key, spec, preset, path) for key, spec in table.items())
    return SearchSpace(params, str(path), _listed_trials(listed, params, preset, path))


def _listed_trials(listed: Any, params: tuple[Param, ...], preset: Preset, path: Path) -> tuple[ListedTrial, ...]:
    """The [[trials]] tables, each key a preset key with a valid value, labels unique, choices respected."""
    if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
        raise SpaceError(f"search space {path}: `trials` must be [[trials]] tables of preset keys and a label.")
    out, choices = [], {p.key: p.choices for p in params if p.kind == "choice"}
    for number, table in enumerate(listed, 1):
        values = {k: v for k, v in table.items() if k != "label"}
        label = table.get("label", ", ".join(f"{k}={v}" for k, v in values.items()) or "base")
        where = f"{path}: [[trials]] {number} ({label})"
        if not isinstance(label, str) or not label.strip() or len(label) > 200:
            raise SpaceError(f"{where}: `label` must be text of 1 to 200 characters.")
        if label in {t.label for t in out}:
            raise SpaceError(f"{where}: another listed trial has the label {label!r}; labels name trials once.")
        for key, value in values.items():
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=1)
                raise SpaceError(f"{where}: {key!r} is not a preset key."
                                 + (f" Did you mean {close[0]!r}?" if close else ""))
            _check_value(preset, key, value, where)
        for key, allowed in choices.items():
            value = values.get(key, preset.get(key))
            if value not in allowed:
                whose = "the trial's value" if key in values else "the base preset's value"
                raise SpaceError(f"{where}: {key} would be {value!r} ({whose}), which is not one of its [params] "
                                 f"choices {list(allowed)}. Add it to the choices or give the trial one of them.")
        out.append(ListedTrial(label, values))
    return tuple(out)


def _param(key: str, spec: Any, preset: Preset, path: Path) -> Param:
    where = f"{path}: [params] {key!r}"
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else " `vlr-workbench presets show NAME` lists the keys."
        raise SpaceError(f"{where} is not a preset key.{hint}")
    if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS or not ({"choices"} <= set(spec) or
                                                                     {"low", "high"} <= set(spec)):
        raise SpaceError(f"{where} must be a table with `low` and `high` (optional `log`, `step`) or `choices`, "
                         f"e.g. {{ low = 1e-4, high = 1e-3, log = true }}; it is {spec!r}.")
    info = FIELDS[key]
    if "choices" in spec and set(spec) & {"low", "high", "log", "step"}:
        raise SpaceError(f"{where}: `choices` lists the values to try; `low`/`high`/`log`/`step` beside it would be "
                         "ignored. Keep one of the two forms.")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: `choices` must be a non-empty list.")
        for value in choices:
            _check_value(preset, key, value, where)
        return Param(key, "choice", choices=tuple(choices))
    if info.type not in ("int", "float"):
        raise SpaceError(f"{where} is a {info.type} key: search it with `choices = [...]`.")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
        raise SpaceError(f"{where}: `low` and `high` must be numbers with low < high (got {low!r}, {high!r}).")
    if log and (low <= 0 or step is not None):
        raise SpaceError(f"{where}: `log = true` needs low > 0 and no `step`.")
    if info.type == "int" and any(float(v) != int(v) for v in (low, high)):
        raise SpaceError(f"{where} is a whole-number key: `low` and `high` must be whole numbers (got {low!r}, "
                         f"{high!r}).")
    if step is not None:
        _check_step(where, step, low, high, info.type)
    for value in (low, high):
        _check_value(preset, key, int(value) if info.type == "int" else float(value), where)
    return Param(key, info.type, float(low), float(high), log, float(step) if step is not None else None)


def _check_step(where: str, step: Any, low: float, high: float, kind: str) -> None:
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0 or step != step:
        raise SpaceError(f"{where}: `step` must be a number above 0 (got {step!r}).")
    if step > high - low:
        raise SpaceError(f"{where}: `step` {step!r} is wider than the range {low!r}..{high!r}: only `low` would be "
                         "tried. Give a step of at most high - low, or leave `step` out.")
    if kind == "int" and float(step) != int(step):
        raise SpaceError(f"{where} is a whole-number key: `step` must be a whole number (got {step!r}).")


def _check_value(preset: Preset, key: str, value: Any, where: str) -> None:
    try:
        preset.with_changes({key: value})
    except PresetError as exc:
        raise SpaceError(f"{where}: {value!r} is not a valid value ({exc})") from None
