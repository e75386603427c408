"""Tuning tips: (metric history, preset) -> tips with preset patches, and the guide's targets.

``propose_tips`` runs the rules in a fixed order (out of memory, instability, DSR against
bicubic, overfitting, low accuracy); ``tips_for_run`` reads a run directory. The thresholds are in ``engine.tips.thresholds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.presets import Preset, load
from engine.runs.run_dir import RunDir
from engine.runs.records import read_evaluation as read_eval_file, read_metrics, stage_dirs
from engine.tips import rules
from engine.tips.model import Tip, apply_tip, tip_changes
from engine.tips.targets import Target, check_targets
from engine.tips.history import most_epochs
from engine.tips.thresholds import THRESHOLDS, Thresholds, target_set_name, trend_epochs

__all__ = ["Tip", "Target", "Thresholds", "THRESHOLDS", "propose_tips", "apply_tip", "tip_changes",
           "check_targets", "tips_for_run", "read_evaluation", "target_set_name", "short_run_note",
           "short_run_note_for_run"]


def propose_tips(history: list[dict[str, Any]], preset: Preset, *, evaluation: dict | None = None,
                 oom: bool = False, thresholds: Thresholds = THRESHOLDS) -> list[Tip]:
    """Tips whose rule fires on ``history`` and whose patch changes ``preset``, most urgent first."""
    dsr = rules.dsr_vs_bicubic(history, preset, thresholds)
    camera = rules.camera(history, preset, evaluation, thresholds)
    found = [rules.out_of_memory(history, preset, oom, thresholds),
             rules.instability(history, preset, thresholds),
             dsr,
             rules.overfitting(history, preset, thresholds),
             camera,
             # a DSR no better than bicubic is the cause to fix first, not the recogniser's capacity; on camera
             # probes the camera is
             None if dsr is not None or camera is not None else rules.low_accuracy(history, preset, evaluation,
                                                                                   thresholds)]
    return [tip for tip in found if tip is not None]


def read_evaluation(run_dir: str | Path) -> dict | None:
    """The run's eval.json (rank-1 per row: dsr, bicubic, hr), or None when it has none."""
    return read_eval_file(Path(run_dir) / "eval.json")


def tips_for_run(run_dir: str | Path) -> tuple[Preset, list[Tip], list[Target]]:
    """The preset, tips and targets of a run directory (preset.toml, metrics.jsonl, eval.json).

    A pipeline run directory holds no metrics itself: its summary.json names the stage run
    directories, whose metrics and eval.json are read together.
    """
    preset, history, evaluation = _read_run(run_dir)
    return preset, propose_tips(history, preset, evaluation=evaluation), check_targets(history, preset, evaluation)


def _read_run(run_dir: str | Path) -> tuple[Preset, list[dict[str, Any]], dict | None]:
    run = RunDir.open(run_dir)
    preset = load(run.path / "preset.toml")
    dirs = [run.path, *stage_dirs(run.path)]
    history = [record for path in dirs for record in read_metrics(path)]
    evaluation = next((found for found in map(read_evaluation, dirs) if found is not None), None)
    return preset, history, evaluation


def short_run_note(history: list[dict[str, Any]], thresholds: Thresholds = THRESHOLDS) -> str | None:
    """Why some rules could not fire: the run has fewer epochs than they need (None when it has enough)."""
    epochs, stage = most_epochs(history)
    missing = [(needed, what) for needed, what in trend_epochs(thresholds) if needed > epochs]
    if not missing:
        return None
    has = (f"This run has {epochs} epoch{'s' if epochs != 1 else ''} of metrics (stage {stage})" if epochs
           else "This run has no epoch of metrics yet")
    needs = ", ".join(f">= {needed} epochs ({what})" for needed, what in missing)
    return (f"{has}, too few for the trend rules: they need {needs}. Train for more epochs (or let the run go "
            "on) and ask for tips again.")


def short_run_note_for_run(run_dir: str | Path) -> str | None:
    """``short_run_note`` of a run directory (and the stage runs a pipeline summary names); None for an
    evaluation without training metrics (its rank-1 is judged without epochs)."""
    _preset, history, evaluation = _read_run(run_dir)
    if evaluation is not None and most_epochs(history)[0] == 0:
        return None
    return short_run_note(history)
