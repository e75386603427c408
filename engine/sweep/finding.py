"""The study a command names (`sweep show/stop/save-best STUDY`, `report STUDY`) and its base preset.

Given ``--preset P`` (or ``--storage URL``), the study is looked up where P's runtime.runs_dir (or the
database) holds it, as the sweep put it. Given only its name, it is looked for in the runs directory
the index of started studies records for it (``engine.sweep.places.read_index``), then in the runs
directory of every known preset, built-in and user; not found, the error names every place looked.
The base preset (what save-best and the report compare with) is the one the study was started from:
its copy in the study's control folder, else the preset of that name, else P.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from engine import presets
from engine.errors import PresetError, WorkbenchError
from engine.jobs.options import SweepOptions
from engine.presets import Preset
from engine.runs.run_dir import runs_root
from engine.sweep.places import base_preset_file, check_study_name, index_path, journal_path, read_index, sweeps_dir

DEFAULT_PRESET = "cpu-demo"


@dataclass(frozen=True)
class FoundStudy:
    study: object               # the optuna Study
    base: Preset                # the preset the study was started from (or --preset P)
    runs_dir: str               # the runs directory whose sweeps/ holds it


def find_study(name: str, preset_ref: str | None = None, storage: str | None = None,
               missing_hint: str = "") -> FoundStudy:
    """The Optuna study ``name`` with its base preset and runs directory (see the module doc)."""
    from engine.sweep.study import load_study

    check_study_name(name)
    if preset_ref is not None or storage:
        holder = presets.load(preset_ref or DEFAULT_PRESET)
        study = load_study(holder, SweepOptions(study=name, storage=storage), missing_hint)
        base = holder if preset_ref is not None else study_base(study, holder.runtime.runs_dir, holder)
        return FoundStudy(study, base, holder.runtime.runs_dir)
    holder = locate_study(name, lambda runs_dir: journal_path(runs_dir, name).is_file(), missing_hint)
    study = load_study(holder, SweepOptions(study=name))
    return FoundStudy(study, study_base(study, holder.runtime.runs_dir, holder), holder.runtime.runs_dir)


def locate_study(name: str, holds: Callable[[str], bool], missing_hint: str = "") -> Preset:
    """A preset whose runtime.runs_dir ``holds`` the study (a preset of a known name, or the default one with
    the indexed runs_dir); a WorkbenchError naming every place looked when none does."""
    looked: list[str] = []
    for runs_dir, holder, why in _candidates(name, looked):
        if holds(runs_dir):
            return holder
        looked.append(f"{sweeps_dir(runs_dir)} ({why})")
    raise WorkbenchError(f"no study {name!r} found: looked in {'; '.join(looked) or 'no runs directory'}. "
                         + (missing_hint or f"Give --preset P whose runtime.runs_dir holds it (or --storage URL "
                                            f"for a database), or start it with `vlr-workbench sweep --preset P "
                                            f"--space FILE --study {name}`."))


def _candidates(name: str, looked: list[str]) -> Iterator[tuple[str, Preset, str]]:
    """(runs_dir, a preset with that runs_dir, why it is looked in): the index's entry for ``name``, then each
    known preset's runs_dir (each directory once); presets that cannot be read are noted in ``looked``."""
    seen: set[Path] = set()
    entries, problem = read_index()
    if problem:
        looked.append(problem)
    indexed = entries.get(name, {}).get("runs_dir")
    if indexed is None and not problem:
        looked.append(f"{index_path()} (no entry for it)")
    if indexed is not None:
        seen.add(Path(indexed).resolve())
        default = presets.load(DEFAULT_PRESET)
        yield indexed, default.with_changes({"runtime.runs_dir": indexed}), f"recorded in {index_path()}"
    by_dir: dict[Path, list[str]] = {}
    holders: dict[Path, Preset] = {}
    for entry in presets.list_presets():
        try:
            preset = presets.load(entry.path)
            where = runs_root(preset.runtime.runs_dir).resolve()
        except WorkbenchError as exc:
            looked.append(f"preset {entry.name} skipped: {str(exc).split('. ')[0]}")
            continue
        by_dir.setdefault(where, []).append(entry.name)
        holders.setdefault(where, preset)
    for where, names in by_dir.items():
        if where not in seen:
            seen.add(where)
            yield str(where), holders[where], "runs_dir of " + ", ".join(names)


def study_base(study, runs_dir: str, fallback: Preset) -> Preset:
    """The preset ``study`` was started from: its copy in the control folder, else that name, else ``fallback``."""
    name = (study.user_attrs.get("setup") or {}).get("base_preset")
    if not isinstance(name, str) or not name:
        return fallback
    for ref in (base_preset_file(runs_dir, study.study_name, name), name):
        try:
            return presets.load(ref)
        except PresetError:
            continue
    return fallback
