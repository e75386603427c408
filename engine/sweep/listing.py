"""The studies of a runs directory and a snapshot of one, for front ends that watch sweeps (the app's
Sweeps tab): each study is ``runs_dir/sweeps/STUDY.journal``; its controller on this host keeps
``runs_dir/sweeps/STUDY/status.json`` (running, finished, stopped, failed, or dead when its process is
gone), and ``stop_sweep`` asks it to stop (its running trials stop with their checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.sweep.places import sweeps_dir
from engine.runs.status import request_stop, run_state


@dataclass(frozen=True)
class StudyEntry:
    name: str
    journal: Path
    state: str                 # its controller's: running, finished, stopped, failed, dead; "-" when never run here
    modified: float            # the journal's last change


def list_studies(runs_dir: str | Path) -> list[StudyEntry]:
    """The journal studies under ``runs_dir/sweeps``, most recently changed first."""
    folder = sweeps_dir(runs_dir)
    entries = []
    for journal in folder.glob("*.journal") if folder.is_dir() else ():
        try:
            modified = journal.stat().st_mtime
        except OSError:
            continue
        entries.append(StudyEntry(journal.stem, journal, controller_state(folder / journal.stem), modified))
    return sorted(entries, key=lambda e: (-e.modified, e.name))


def controller_state(control: Path) -> str:
    return run_state(control) if (control / "status.json").is_file() else "-"


def study_snapshot(entry: StudyEntry) -> dict[str, Any]:
    """What the study holds now: its set-up, directions, trials (as ``sweep show``), importances."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from engine.sweep.study import importances, trial_rows

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=entry.name, storage=JournalStorage(JournalFileBackend(str(entry.journal))))
    return {"study": entry.name, "state": controller_state(entry.journal.with_suffix("")),
            "setup": study.user_attrs.get("setup") or {}, "directions": [d.name.lower() for d in study.directions],
            "trials": trial_rows(study), "importances": importances(study)}


def stop_sweep(runs_dir: str | Path, study: str) -> Path:
    """Ask this host's controller of ``study`` to stop (its running trials stop with their checkpoints)."""
    return request_stop(sweeps_dir(runs_dir) / study)
