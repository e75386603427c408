"""Where a study's files live under ``runtime.runs_dir``: ``sweeps/STUDY.journal`` (the Optuna journal,
unless an RDB ``--storage`` holds the study) and ``sweeps/STUDY/`` (this host's controller status and
stop request, its output, and for a sweep started from the app its base preset and space)."""

from __future__ import annotations

from pathlib import Path

from engine.runs.run_dir import runs_root


def sweeps_dir(runs_dir: str | Path) -> Path:
    return runs_root(runs_dir) / "sweeps"


def journal_path(runs_dir: str | Path, study: str) -> Path:
    return sweeps_dir(runs_dir) / f"{study}.journal"


def control_dir(runs_dir: str | Path, study: str) -> Path:
    """``runs_dir/sweeps/STUDY/``, made if missing."""
    folder = sweeps_dir(runs_dir) / study
    folder.mkdir(parents=True, exist_ok=True)
    return folder
