"""Job functions for the app tests, registered in ``engine.jobs.registry.JOBS`` as ``app_fake_jobs:NAME``.

They follow the job contract (events, stop flag, run directory) without any tensor work, so the
app's flows can be tested in a second; the real train-dsr job is tested separately.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from engine.io import atomic
from engine.errors import JobStopped
from engine.events import Finished, Log, Metrics, Progress
from engine.runs.run_dir import RunDir

EPOCHS, STEPS = 3, 4


def new_run(runs_dir, preset, kind) -> RunDir:
    """A run directory with a fixed, numbered name (screens stay the same from run to run)."""
    root = Path(runs_dir)
    number = 1 + sum(1 for _ in root.glob("*")) if root.is_dir() else 1
    path = root / f"20260101-{number:06d}-{preset.name}-{kind}"
    path.mkdir(parents=True)
    run = RunDir(path)
    run.write_preset(preset)
    return run


def quick_train(request, emit, stop):
    """Three epochs of falling losses; the last epoch's train loss is NaN (an instability tip)."""
    run = new_run(request.preset.runtime.runs_dir, request.preset, request.kind)
    emit(Log(request.kind, "fake training started"))
    for epoch in range(1, EPOCHS + 1):
        for step in range(1, STEPS + 1):
            stop.check()
            emit(Progress(request.kind, "dsr", epoch, EPOCHS, step, STEPS, images_per_second=100.0,
                          eta_seconds=float((EPOCHS - epoch) * STEPS + STEPS - step), loss=1.0 / (epoch + step)))
        train = {"loss": 1.0 / epoch if epoch < EPOCHS else math.nan, "l1": 0.5 / epoch, "tv": 0.01 / epoch}
        for split, values in (("train", train), ("val", {"loss": 1.1 / epoch, "psnr": 20.0 + epoch,
                                                         "bicubic_psnr": 21.0})):
            event = Metrics(request.kind, "dsr", epoch, epoch * STEPS, split, values)
            run.log_metrics(event)
            emit(event)
    return Finished(request.kind, run.path, {"best_psnr": 20.0 + EPOCHS})


def until_stopped(request, emit, stop):
    """Emits progress until the stop flag is set (at most 2 minutes), then saves last.pt like a trainer."""
    run = new_run(request.preset.runtime.runs_dir, request.preset, request.kind)
    step = 0
    try:
        while step < 6000:
            step += 1
            emit(Progress(request.kind, "dsr", 1, 1, step, 6000, images_per_second=10.0, loss=1.0))
            stop.check()
            time.sleep(0.02)
    except JobStopped:
        atomic.write_text(run.path / "last.pt", "resumable")
        return Finished(request.kind, run.path, {"steps": step}, stopped=True)
    return Finished(request.kind, run.path, {"steps": step})


def burst_then_quiet(request, emit, stop):
    """200 Progress events at once, then nothing until stopped (the app must not redraw 200 times, nor
    keep waking while nothing arrives)."""
    run = new_run(request.preset.runtime.runs_dir, request.preset, request.kind)
    for step in range(1, 201):
        emit(Progress(request.kind, "dsr", 1, 1, step, 200, images_per_second=50.0, loss=1.0 / step))
    while not stop.is_set():
        time.sleep(0.02)
    return Finished(request.kind, run.path, {"steps": 200}, stopped=True)


def failing(request, emit, stop):
    raise RuntimeError("boom: the fake job failed")


EVALUATION = {
    "dsr": {"rank1": 0.625, "rank5": 0.875, "auc": 0.91, "eer": 0.12, "tar_at_far_1e-2": 0.5,
            "tar_at_far_1e-3": 0.25, "open_set_accuracy": 0.7, "psnr": 24.5, "ssim": 0.81},
    "bicubic": {"rank1": 0.5, "rank5": 0.75, "auc": 0.85, "eer": 0.2, "tar_at_far_1e-2": 0.4,
                "tar_at_far_1e-3": 0.1, "open_set_accuracy": 0.6, "psnr": 22.25, "ssim": 0.7},
    "hr": {"rank1": 0.95, "rank5": 1.0, "auc": 0.99, "eer": 0.02, "tar_at_far_1e-2": 0.9,
           "tar_at_far_1e-3": 0.8, "open_set_accuracy": 0.9, "psnr": None, "ssim": 1.0},
}


def write_eval_run(runs_dir, preset, evaluation=EVALUATION):
    """A finished evaluate run directory holding eval.json and one metrics line."""
    run = new_run(runs_dir, preset, "evaluate")
    atomic.write_json(run.path / "eval.json", evaluation)
    (run.path / "metrics.jsonl").write_text(json.dumps({"job": "train-dsr", "stage": "dsr", "epoch": 1, "step": 4,
                                                        "split": "val", "psnr": 23.0}) + "\n")
    return run.path


def evaluate(request, emit, stop):
    """Records the options it was given in eval.json's protocol, like the real job."""
    options = {k: v for k, v in vars(request.options).items() if v is not None}
    evaluation = dict(EVALUATION, protocol={"options": options})
    if not request.options.dsr:
        evaluation["dsr"] = None
    path = write_eval_run(request.preset.runtime.runs_dir, request.preset, evaluation)
    emit(Progress(request.kind, "eval", 1, 1, 1, 1))
    return Finished(request.kind, path, {"bicubic_rank1": 0.5})


def pipeline(request, emit, stop):
    """Like the real pipeline: its own run directory links the evaluate stage's eval.json."""
    run = new_run(request.preset.runtime.runs_dir, request.preset, "pipeline")
    eval_dir = write_eval_run(request.preset.runtime.runs_dir, request.preset)
    for stage in ("stage1", "stage2"):
        event = Metrics(request.kind, stage, 1, 1, "val", {"top1": 0.5, "loss": 2.0})
        emit(event)
    return Finished(request.kind, run.path, {"eval_json": str(eval_dir / "eval.json"), "status": "done"})
