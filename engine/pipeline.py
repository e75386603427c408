"""The ``pipeline`` job: the guide's three commands in one go, each stage using the previous outputs.

Stages: ``recogniser`` (the preset's EdgeFace weights, a finished pretrain run, or a ``pretrain``
run made now) -> ``train-dsr`` (identity losses against that recogniser) -> ``finetune`` (on that
DSR's outputs) -> ``evaluate`` (that DSR and the fine-tuned recogniser, beside bicubic and HR).
Each training stage writes its own run directory, chosen by the pipeline before the stage starts
and recorded in the pipeline's ``summary.json`` (rewritten after every change), so
``--resume PIPELINE_RUN_DIR`` reuses the stages that finished, resumes the one that was stopped or
killed from its last.pt, and runs the rest. Stage events are passed on as they come. Under
torchrun the training stages run on every rank; evaluation runs on rank 0 alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import distributed
from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Event, Failed, Finished, Log, ignore
from engine.job_options import DSROptions, FinetuneOptions, PipelineOptions, PretrainOptions
from engine.jobs import JobRequest, StopFlag, job_function
from engine.presets import load as load_preset
from engine.run_status import RunLock, StatusWriter
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
    """summary.json of the pipeline run, rewritten after every change (rank 0 only)."""

    def __init__(self, run: RunDir, data: dict[str, Any] | None, write: bool):
        self.run, self.enabled = run, write
        self.data: dict[str, Any] = data or {"stages": {}, "stage_seconds": {}, "stage_runs": {}}
        self.data["status"] = "running"
        self.write()

    def stage_done(self, name: str, path: Path | None, seconds: float) -> None:
        self.data["stages"][name] = None if path is None else str(path)
        self.data["stage_seconds"][name] = round(self.data["stage_seconds"].get(name, 0) + seconds, 1)
        self.data.pop("stopped_run", None)
        self.write()

    def write(self) -> None:
        if self.enabled:
            self.run.write_summary(self.data)


def _headline(eval_json: Path) -> dict[str, Any]:
    doc = json.loads(eval_json.read_text())
    return {f"{variant}_{key}": (doc[variant] or {}).get(key) for variant in ("dsr", "bicubic", "hr")
            for key in HEADLINE_KEYS}


def run_pipeline(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    from engine.data.resolve import job_data_root
    from engine.recogniser import existing_recogniser, pretrain_epochs
    from engine.runtime import resolve

    opts: PipelineOptions = request.options or PipelineOptions()
    ctx, _ = distributed.setup(resolve(request.preset).device)
    say = emit if ctx.is_main else ignore
    if opts.resume:
        run = RunDir.open(opts.resume)
        preset, previous = load_preset(run.path / "preset.toml"), run.read_summary()
        if previous.get("status") == "done":
            raise WorkbenchError(f"{run.path} is a finished pipeline: nothing to resume. Start a new one with "
                                 f"`vlr-workbench pipeline --preset {preset.name}`.")
        data = request.data or previous.get("data_root")
    else:
        preset, previous, data = request.preset, None, request.data
        path = RunDir.create(preset.runtime.runs_dir, preset, JOB).path if ctx.is_main else None
        run = RunDir(Path(distributed.broadcast(str(path) if path else None, ctx)))
    lock = RunLock(run.path)
    if ctx.is_main:
        lock.acquire()
    summary = _Summary(run, previous, ctx.is_main)
    status = StatusWriter(run.path, JOB, enabled=ctx.is_main)
    forward = _pass_on(emit)
    stage = STAGES[0]
    started = time.perf_counter()

    def announce(kind: str) -> None:
        say(Log(JOB, f"stage {STAGES.index(kind) + 1}/{len(STAGES)}: {kind}"))
        status.update(force=True, stage=kind)

    def stage_run(kind: str, options: Any) -> Path:
        """Run (or resume) a stage job in a run directory recorded before it starts; its run dir when done."""
        done = summary.data["stages"].get(kind)
        if done:
            say(Log(JOB, f"{kind}: reusing the finished stage run {done}"))
            return Path(done)
        recorded = summary.data["stage_runs"].get(kind)
        if recorded and (Path(recorded) / "last.pt").is_file():
            say(Log(JOB, f"{kind}: resuming the unfinished stage run {recorded}"))
            options = replace(options, resume=recorded, run_dir=None, allow_other_data=opts.allow_other_data)
        else:
            if not recorded:
                path = RunDir.create(preset.runtime.runs_dir, preset, kind).path if ctx.is_main else None
                recorded = distributed.broadcast(str(path) if path else None, ctx)
                summary.data["stage_runs"][kind] = recorded
                summary.write()
            options = replace(options, run_dir=recorded)
        t0 = time.perf_counter()
        result = job_function(kind)(JobRequest(kind, preset, data=data, options=options), forward, stop)
        if result.stopped:
            summary.data["stopped_run"] = str(result.run_dir)   # holds last.pt: --resume continues it
            raise JobStopped()
        summary.stage_done(kind, Path(result.run_dir), time.perf_counter() - t0)
        return Path(result.run_dir)

    def finish(stopped: bool) -> Finished:
        summary.data["status"] = "stopped" if stopped else "done"
        summary.data["total_seconds"] = round(summary.data.get("total_seconds", 0) + time.perf_counter() - started, 1)
        summary.write()
        status.end("stopped" if stopped else "finished")
        lock.release()
        if stopped:
            say(Log(JOB, f"pipeline stopped during {stage}; finished stages: {', '.join(summary.data['stages'])}. "
                         f"`vlr-workbench pipeline --resume {run.path}` continues from there", level="warning"))
        # the event carries the short version (the CLI prints it); summary.json keeps everything
        short = {k: v for k, v in summary.data.items() if k in SHORT_KEYS or k.endswith("_rank1")}
        return Finished(job=JOB, run_dir=run.path, summary=short, stopped=stopped)

    try:
        announce(stage)
        stop.check()
        data_root = job_data_root(preset, data, say, JOB)
        data = str(data_root)
        summary.data["data_root"] = data
        if "recogniser" in summary.data["stages"]:
            recogniser = Path(summary.data["recogniser"])
        else:
            t0 = time.perf_counter()
            recogniser = Path(opts.edgeface) if opts.edgeface else existing_recogniser(preset, data_root, say)
            made = None
            if recogniser is None:
                say(Log(JOB, f"no EdgeFace weights: pre-training {preset.runtime.edgeface_variant} on the HR images"))
                made = stage_run("pretrain", PretrainOptions(epochs=pretrain_epochs(preset)))
                recogniser = made / "best.pt"
            summary.data["recogniser"] = str(recogniser)
            summary.stage_done(stage, made, time.perf_counter() - t0)
        stop.check()

        stage = "train-dsr"
        announce(stage)
        dsr = stage_run(stage, DSROptions(edgeface=str(recogniser))) / "best.pt"
        stop.check()

        stage = "finetune"
        announce(stage)
        finetuned = stage_run(stage, FinetuneOptions(dsr=str(dsr), edgeface=str(recogniser))) / "best.pt"
        stop.check()

        stage = "evaluate"
        announce(stage)
        if ctx.is_main:   # evaluation stays one process
            t0 = time.perf_counter()
            options = {"dsr": str(dsr), "edgeface": str(finetuned), "edgeface_base": str(recogniser)}
            result = job_function(stage)(JobRequest(stage, preset, data=data, options=options), forward, stop)
            if result.stopped:
                raise JobStopped()
            summary.stage_done(stage, result.run_dir, time.perf_counter() - t0)
            summary.data["eval_json"] = str(Path(result.run_dir) / "eval.json")
            summary.data.update(_headline(Path(result.run_dir) / "eval.json"))
        distributed.barrier(ctx)
    except JobStopped:
        return finish(stopped=True)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
        summary.data.update(status="failed", failed_stage=stage, error=error)
        summary.write()
        status.end("failed", error)
        lock.release()
        raise
    return finish(stopped=False)
