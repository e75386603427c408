"""What each job key does with the current preset: the JobRequest options, or why it cannot run.

The evaluate key uses the latest checkpoints of the selected preset's runs (DSR ``best.pt`` of
train-dsr, recogniser ``best.pt`` of finetune) and falls back to the bicubic baseline when no
DSR checkpoint exists yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.presets import Preset
from engine.runs import latest_run

JOB_KINDS = {"train": "train-dsr", "finetune": "finetune", "evaluate": "evaluate", "pipeline": "pipeline"}


@dataclass(frozen=True)
class JobPlan:
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""              # shown in the log when the job starts


def latest_checkpoint(preset: Preset, job: str, name: str = "best.pt") -> Path | None:
    run = latest_run(preset.runtime.runs_dir, preset.name, job, require=name)
    return run / name if run else None


def plan_job(key: str, preset: Preset) -> JobPlan:
    kind = JOB_KINDS[key]
    if kind == "evaluate":
        dsr = latest_checkpoint(preset, "train-dsr")
        edgeface = latest_checkpoint(preset, "finetune")
        options: dict[str, Any] = {"dsr": str(dsr) if dsr else None}
        if edgeface:
            options["edgeface"] = str(edgeface)
        note = f"evaluating DSR {dsr}" if dsr else "no DSR checkpoint yet: evaluating the bicubic baseline"
        if edgeface:
            note += f" with the fine-tuned recogniser {edgeface}"
        return JobPlan(kind, options, note)
    if kind == "finetune":
        dsr = latest_checkpoint(preset, "train-dsr")
        if dsr:
            return JobPlan(kind, {"dsr": str(dsr)}, f"fine-tuning on the outputs of {dsr}")
        return JobPlan(kind, {}, "no DSR checkpoint yet: fine-tuning on bicubic-upscaled VLR images")
    return JobPlan(kind, {}, "")
