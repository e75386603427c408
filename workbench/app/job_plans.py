"""What each job key does with the current preset: the JobRequest options, or why it cannot run.

The evaluate key uses the latest checkpoints of the selected preset's runs (DSR ``best.pt`` of
train-dsr, recogniser ``best.pt`` of finetune), preferring finished runs over stopped or failed
ones and naming the run and its state in the log; it falls back to the bicubic baseline when no
DSR checkpoint exists yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jobs.registry import app_jobs
from engine.presets import Preset
from engine.runs.status import pick_run as engine_pick_run

@dataclass(frozen=True)
class JobPlan:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""              # shown in the log when the job starts


def pick_run(preset: Preset, job: str, name: str = "best.pt") -> tuple[Path, str] | None:
    """(run directory, state): the newest finished run of ``job`` holding ``name`` (see engine.runs.status)."""
    return engine_pick_run(preset.runtime.runs_dir, preset.name, job, name)


def describe(kind: str, found: tuple[Path, str] | None) -> str:
    if found is None:
        return ""
    path, state = found
    return f"{kind} {path / 'best.pt'} (run {path.name}, {state})"


def plan_job(key: str, preset: Preset) -> JobPlan:
    kind = app_jobs()[key].kind
    if kind == "evaluate":
        dsr_run, ft_run = pick_run(preset, "train-dsr"), pick_run(preset, "finetune")
        options: dict[str, Any] = {"dsr": str(dsr_run[0] / "best.pt") if dsr_run else None}
        if ft_run:
            options["edgeface"] = str(ft_run[0] / "best.pt")
        note = f"evaluating {describe('DSR', dsr_run)}" if dsr_run else \
            "no DSR checkpoint yet: evaluating the bicubic baseline"
        if ft_run:
            note += f" with the fine-tuned recogniser {describe('', ft_run).strip()}"
        return JobPlan(kind, options, note)
    if kind == "finetune":
        dsr_run = pick_run(preset, "train-dsr")
        if dsr_run:
            return JobPlan(kind, {"dsr": str(dsr_run[0] / "best.pt")},
                           f"fine-tuning on the outputs of {describe('DSR', dsr_run)}")
        return JobPlan(kind, {}, "no DSR checkpoint yet: fine-tuning on bicubic-upscaled VLR images")
    return JobPlan(kind, {}, "")
