"""Start ``vlr-workbench sweep`` as a process of its own (the app's n on the Sweeps tab): it outlives the
app like its own-process jobs, writes its output to the study's control folder and is stopped through
that folder's stop request (``engine.sweep.listing.stop_sweep``)."""

from __future__ import annotations

import sys
from dataclasses import fields

from engine.jobs.options import SweepOptions
from engine.jobs.process import DetachedJob, spawn
from engine.presets import Preset, save
from engine.sweep.places import base_preset_file, control_dir


def start_sweep(preset: Preset, data: str | None, opts: SweepOptions) -> DetachedJob:
    """Start ``vlr-workbench sweep`` on ``preset`` (written, saved or not, to the study's control folder as
    PRESET.toml) in its own process; its output goes to the folder's controller.log."""
    study = opts.study or f"{preset.name}-sweep"
    control = control_dir(preset.runtime.runs_dir, study)
    preset_file = save(preset, base_preset_file(preset.runtime.runs_dir, study, preset.name), overwrite=True)
    argv = [sys.executable, "-m", "workbench.cli.main", "sweep", "--preset", str(preset_file), "--study", study]
    if data:
        argv += ["--data", str(data)]
    for item in fields(SweepOptions):
        value, default = getattr(opts, item.name), item.default
        if item.name == "study" or value == default:
            continue
        if item.name == "prune":
            argv.append("--no-prune")
        else:
            argv += [f"--{item.name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return spawn("sweep", argv, control / "controller.log", control, None)
