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

from engine.presets import Preset
from engine.run_status import run_state
from engine.runs import iter_runs

JOB_KINDS = {"train": "train-dsr", "finetune": "finetune", "evaluate": "evaluate", "pipeline": "pipeline"}


@dataclass(frozen=True)
class JobPlan:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""              # shown in the log when the job starts


def latest_checkpoint(preset: Preset, job: str, name: str = "best.pt") -> Path | None:
    found = pick_run(preset, job, name)
    return found[0] / name if found else None


def pick_run(preset: Preset, job: str, name: str = "best.pt") -> tuple[Path, str] | None:
    """(run directory, state) of the newest finished run of ``job`` holding ``name``; a stopped, failed or
    dead run only when no finished one exists (it is then named with its state)."""
    candidates = [path for path in iter_runs(preset.runtime.runs_dir)
                  if path.name == latest_name(path, preset.name, job) and (path / name).exists()]
    states = [(path, run_state(path)) for path in candidates]
    for path, state in states:
        if state == "finished":
            return path, state
    return states[0] if states else None


def latest_name(path: Path, preset_name: str, job: str) -> str:
    """``path.name`` when it is a run of ``job`` for ``preset_name`` (as ``latest_run`` matches), else ''."""
    name = path.name
    return name if name.endswith(f"-{preset_name}-{job}") or f"-{preset_name}-{job}-" in name else ""


def describe(kind: str, found: tuple[Path, str] | None) -> str:
    if found is None:
        return ""
    path, state = found
    return f"{kind} {path / 'best.pt'} (run {path.name}, {state})"


def plan_job(key: str, preset: Preset) -> JobPlan:
    kind = JOB_KINDS[key]
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
