"""The Sweeps tab's work: start a sweep in its own process, ask a study's controller to stop, save a trial's
preset. A plain object (no widgets): the Sweeps tab calls it and shows what it returns; the process it starts
is handed to the job controller, which reaps it. The tab itself follows the study from its storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError
from engine.io import atomic
from engine.jobs.options import SweepOptions
from engine.jobs.process import DetachedJob
from engine.presets import Preset, save
from engine.sweep.launch import start_sweep
from engine.sweep.listing import controller_state, stop_sweep
from engine.sweep.places import control_dir
from engine.sweep.study import check_sweep, preset_from_run


def best_preset_name(base: str, study: str) -> str:
    """The name the CLI gives a study's best preset (``PRESET-best-STUDY``), also the app's suggestion."""
    return f"{base}-best-{study}".replace("_", "-")


def study_space(runs_dir: str | Path, study: str) -> str:
    """The search space a study was started with from the app ('' when there is none)."""
    space_file = control_dir(runs_dir, study) / "space.toml"
    return space_file.read_text(encoding="utf-8") if space_file.is_file() else ""


def start(preset: Preset, data: str | None, values: dict[str, Any]) -> DetachedJob:
    """Start the sweep the dialog describes (raises WorkbenchError/OSError with the reason; nothing started).

    ``values["space_file"]`` is the file the dialog loaded when its text is unchanged: the engine checks that
    file (its errors name it); an edited space is written to the study's control folder first."""
    runs_dir, study = preset.runtime.runs_dir, values["study"] or f"{preset.name}-sweep"
    control = control_dir(runs_dir, study)
    if controller_state(control) == "running":
        raise WorkbenchError(f"study {study} is running here already: x on the Sweeps tab stops it; give another "
                             "study name for a new sweep.")
    picked = values.get("space_file") or ""
    opts = SweepOptions(space=picked or str(control / "space.toml"), job=values["job"], trials=values["trials"],
                        objective=values["objective"], study=study, parallel=values["parallel"],
                        storage=values.get("storage") or None)
    if not picked:                      # the edited text is what the engine checks
        atomic.write_text(control / "space.toml", values["space"])
    check_sweep(preset, opts)
    if picked:                          # kept beside the study (the next n starts from it)
        atomic.write_text(control / "space.toml", values["space"])
    return start_sweep(preset, data, opts)


def stop(runs_dir: str | Path, study: str) -> Path:
    return stop_sweep(runs_dir, study)


def save_trial(run_dir: Path, base: Preset, name: str) -> str | None:
    """Save a trial run's preset as ``name``; the error message, or None when saved."""
    try:
        save(preset_from_run(run_dir, base, name), name)
    except WorkbenchError as exc:
        return str(exc)
    return None
