"""The ``pipeline`` job: the guide's three commands in one go, each stage using the previous outputs.

Stages: ``recogniser`` (the preset's EdgeFace weights, or HR pre-training when it has none) ->
``train-dsr`` (identity losses against that recogniser) -> ``finetune`` (on that DSR's outputs)
-> ``evaluate`` (that DSR and the fine-tuned recogniser, beside bicubic and HR). Each stage
writes its own run directory; the pipeline's run directory holds ``summary.json`` linking them,
with the headline numbers, rewritten after every stage so a stopped or failed pipeline still
says how far it got. Stage events are passed on as they come, so the CLI and the app show each
stage's progress.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Event, Failed, Finished, Log
from engine.jobs import JobRequest, StopFlag, job_function
from engine.runs import RunDir

JOB = "pipeline"
STAGES = ("recogniser", "train-dsr", "finetune", "evaluate")
SHORT_KEYS = ("status", "total_seconds", "stages", "stopped_run", "eval_json")
HEADLINE_KEYS = ("rank1", "rank5", "auc", "eer", "open_set_accuracy", "psnr", "ssim")


def _pass_on(emit: Emit) -> Emit:
    """Forward a stage's events; its end is reported by the pipeline, not as the pipeline's own end."""
    def forward(event: Event) -> None:
        if not isinstance(event, (Finished, Failed)):
            emit(event)
    return forward


class _Summary:
    """summary.json of the pipeline run, rewritten after every stage."""

    def __init__(self, run: RunDir):
        self.run = run
        self.data: dict[str, Any] = {"status": "running", "stages": {}, "stage_seconds": {}}
        self.write()

    def stage_done(self, name: str, path: Path | None, seconds: float) -> None:
        self.data["stages"][name] = None if path is None else str(path)
        self.data["stage_seconds"][name] = round(seconds, 1)
        self.write()

    def write(self) -> None:
        self.run.write_summary(self.data)


def _headline(eval_json: Path) -> dict[str, Any]:
    import json

    doc = json.loads(eval_json.read_text())
    return {f"{variant}_{key}": (doc[variant] or {}).get(key) for variant in ("dsr", "bicubic", "hr")
            for key in HEADLINE_KEYS}


def run_pipeline(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    from engine.data.resolve import job_data_root
    from engine.trainers.finetune import recogniser_weights

    preset = request.preset
    run = RunDir.create(preset.runtime.runs_dir, preset, JOB)
    summary = _Summary(run)
    forward = _pass_on(emit)
    stage = STAGES[0]
    started = time.perf_counter()

    def announce(kind: str) -> None:
        emit(Log(JOB, f"stage {STAGES.index(kind) + 1}/{len(STAGES)}: {kind}"))

    def run_stage(kind: str, options: dict[str, Any]) -> Finished:
        announce(kind)
        sub = JobRequest(kind=kind, preset=preset, data=request.data, options=options)
        result = job_function(kind)(sub, forward, stop)
        if result.stopped and result.run_dir is not None:
            summary.data["stopped_run"] = str(result.run_dir)   # holds last.pt: resume it from there
        return result

    def finish(stopped: bool) -> Finished:
        summary.data["status"] = "stopped" if stopped else "done"
        summary.data["total_seconds"] = round(time.perf_counter() - started, 1)
        summary.write()
        if stopped:
            emit(Log(JOB, f"pipeline stopped during {stage}; finished stages: {', '.join(summary.data['stages'])}",
                     level="warning"))
        # the event carries the short version (the CLI prints it); summary.json keeps everything
        short = {k: v for k, v in summary.data.items() if k in SHORT_KEYS or k.endswith("_rank1")}
        return Finished(job=JOB, run_dir=run.path, summary=short, stopped=stopped)

    try:
        announce(stage)
        t0 = time.perf_counter()
        data_root = job_data_root(preset, request.data, emit, JOB)
        given = request.options.get("edgeface")
        recogniser = Path(given) if given else Path(recogniser_weights(preset, data_root, forward, stop))
        summary.data["recogniser"] = str(recogniser)
        made_here = (recogniser.parent / "preset.toml").is_file()   # a pretrain run dir, not a weights folder
        summary.stage_done(stage, recogniser.parent if made_here else None, time.perf_counter() - t0)
        stop.check()

        stage = "train-dsr"
        t0 = time.perf_counter()
        dsr_run = run_stage(stage, {"edgeface": str(recogniser)})
        if dsr_run.stopped:
            return finish(stopped=True)
        summary.stage_done(stage, dsr_run.run_dir, time.perf_counter() - t0)
        dsr = Path(dsr_run.run_dir) / "best.pt"
        stop.check()

        stage = "finetune"
        t0 = time.perf_counter()
        ft_run = run_stage(stage, {"dsr": str(dsr), "edgeface": str(recogniser)})
        if ft_run.stopped:
            return finish(stopped=True)
        summary.stage_done(stage, ft_run.run_dir, time.perf_counter() - t0)
        stop.check()

        stage = "evaluate"
        t0 = time.perf_counter()
        ev_run = run_stage(stage, {"dsr": str(dsr), "edgeface": str(Path(ft_run.run_dir) / "best.pt")})
        if ev_run.stopped:
            return finish(stopped=True)
        summary.stage_done(stage, ev_run.run_dir, time.perf_counter() - t0)
        summary.data["eval_json"] = str(Path(ev_run.run_dir) / "eval.json")
        summary.data.update(_headline(Path(ev_run.run_dir) / "eval.json"))
    except JobStopped:
        return finish(stopped=True)
    except WorkbenchError as exc:
        summary.data.update(status="failed", failed_stage=stage, error=str(exc))
        summary.write()
        raise
    except Exception as exc:  # a bug: record where, keep the traceback
        summary.data.update(status="failed", failed_stage=stage, error=f"{type(exc).__name__}: {exc}")
        summary.write()
        raise
    return finish(stopped=False)
