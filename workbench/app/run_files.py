"""What the panels read of a run directory, through ``engine.runs.records`` only: a run's metric records (a
pipeline's from its stage runs too) and its evaluation (the run's own eval.json or its stages')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.runs.records import read_metrics, stage_dirs
from workbench.app.eval_results import load_evaluation


def run_folders(path: Path) -> tuple[Path, ...]:
    """A run directory and, for a pipeline, its stage runs."""
    return (path, *stage_dirs(path))


def run_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl of a run and, for a pipeline, of its stage runs."""
    return [record for folder in run_folders(path) for record in read_metrics(folder)]


def run_evaluation(path: Path) -> tuple[dict | None, Path | None]:
    """(evaluation, the folder holding it) of a run or of its stages; (None, None) when there is none
    (raises WorkbenchError for a damaged eval.json)."""
    for folder in run_folders(path):
        if (folder / "eval.json").is_file():
            found = load_evaluation(folder)
            if found is not None:
                return found, folder
    return None, None
