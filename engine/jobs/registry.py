"""The engine API shared by the CLI and the app: run a job with a preset and an event callback.

A job is a function ``(JobRequest, Emit, StopFlag) -> Finished``. ``run_job`` turns a user error
into a ``Failed`` event with a one-paragraph message, an early stop into ``Finished(stopped=True)``,
and always emits exactly one ``Finished`` or ``Failed`` as its last event.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from engine.io import atomic
from engine.jobs import options as job_options
from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Failed, Finished
from engine.presets import Preset


class StopFlag:
    """Cooperative stop: the UI or a signal handler sets it, trainers call ``check()`` every step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise JobStopped()


@dataclass(frozen=True)
class JobSpec:
    """One kind of job: what runs it and how front ends treat it (the one table of job kinds)."""
    kind: str
    function: str                  # "module:function", imported on first use so that the CLI starts fast
    options: type                  # its typed options (engine.jobs.options); a dict of their fields is converted
    resume_file: str | None        # what a stopped run holds for `--resume` (None: not resumable)
    app_action: str | None = None  # the app's action that starts it (keys t f e p), None: CLI only
    own_process: bool = False      # the app runs it as a separate CLI process it follows (it outlives the app)
    short: str = ""                # its name in narrow tables (the kind itself when empty)
    sweep_trial: bool = False      # a sweep's trial may run it (it records metrics a study can score)
    resumed_by_rerun: bool = False  # stopped, it resumes when the same command runs again (a sweep's study)

    def load(self) -> "JobFn":
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


JOBS: dict[str, JobSpec] = {spec.kind: spec for spec in (
    JobSpec("train-dsr", "engine.train.dsr:run_train_dsr", job_options.DSROptions, "last.pt", "train", True,
            "train", sweep_trial=True),
    JobSpec("finetune", "engine.train.finetune:run_finetune", job_options.FinetuneOptions, "last.pt", "finetune",
            True, "tune", sweep_trial=True),
    JobSpec("pretrain", "engine.train.pretrain:run_pretrain", job_options.PretrainOptions, "last.pt", short="pre"),
    JobSpec("evaluate", "engine.evaluation.evaluate:run_evaluate", job_options.EvaluateOptions, None, "evaluate",
            short="eval"),
    JobSpec("pipeline", "engine.jobs.pipeline:run_pipeline", job_options.PipelineOptions, "summary.json",
            "pipeline", True, "pipe", sweep_trial=True),
    JobSpec("sweep", "engine.sweep.study:run_sweep", job_options.SweepOptions, None, resumed_by_rerun=True),
    JobSpec("export", "engine.deploy.export:run_export", job_options.ExportOptions, None),
)}


def job_spec(kind: str) -> JobSpec:
    if kind not in JOBS:
        raise WorkbenchError(f"unknown job '{kind}'. Jobs: {', '.join(JOBS)}.")
    return JOBS[kind]


def own_process_jobs() -> list[str]:
    """The jobs the app may start as their own CLI process (they outlive the app)."""
    return [kind for kind, spec in JOBS.items() if spec.own_process]


def sweep_trial_jobs() -> list[str]:
    """The jobs a sweep's trial may run."""
    return [kind for kind, spec in JOBS.items() if spec.sweep_trial]


def short_job_name(kind: str) -> str:
    """A job's name in narrow tables (``train`` for train-dsr); an unknown kind as it is."""
    spec = JOBS.get(kind)
    return spec.short or kind if spec else kind


def app_jobs() -> dict[str, JobSpec]:
    """The app's job actions -> their job."""
    return {spec.app_action: spec for spec in JOBS.values() if spec.app_action}


@dataclass(frozen=True)
class JobRequest:
    kind: str
    preset: Preset
    data: str | None = None               # dataset root overriding preset.data.root
    options: Any = None                   # the job's options (JobSpec.options); a dict of their fields is converted

    def __post_init__(self) -> None:
        kind_options = JOBS[self.kind].options if self.kind in JOBS else None
        options = self.options if self.options is not None else {}
        if kind_options is not None and isinstance(options, dict):
            fields = {f.name for f in dataclasses.fields(kind_options)}
            unknown = sorted(set(options) - fields)
            if unknown:
                raise WorkbenchError(f"job {self.kind} has no option {', '.join(unknown)}; its options are "
                                     f"{', '.join(sorted(fields))}.")
            options = kind_options(**{k: v for k, v in options.items() if v is not None})
        object.__setattr__(self, "options", options)


JobFn = Callable[[JobRequest, Emit, StopFlag], Finished]


def job_function(kind: str) -> JobFn:
    return job_spec(kind).load()


def run_job(request: JobRequest, emit: Emit, stop: StopFlag | None = None) -> Finished | Failed:
    """Run a job to its end; never raises for user errors or stops."""
    stop = stop or StopFlag()
    try:
        result: Finished | Failed = job_function(request.kind)(request, emit, stop)
    except WorkbenchError as exc:
        result = Failed(job=request.kind, error=str(exc))
    except JobStopped as exc:
        result = Finished(job=request.kind, run_dir=None, stopped=True, resume_hint=exc.resume)
    except OSError as exc:   # a full or read-only disk while a run appends its metrics or log
        error = atomic.storage_error(exc, exc.filename or "the run directory")
        result = (Failed(job=request.kind, error=str(error)) if error is not None else
                  Failed(job=request.kind, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()))
    except MemoryError:
        result = Failed(job=request.kind, error="out of memory: lower dsr.batch_size or finetune.batch_size.")
    except Exception as exc:  # noqa: BLE001 - a bug or an unexpected runtime error: keep the traceback
        from engine.distributed import peer_lost

        if peer_lost(exc):
            result = Failed(job=request.kind, error=peer_lost(exc) or "")
        elif "out of memory" in str(exc).lower():
            result = Failed(job=request.kind, error=f"out of memory ({exc}). Lower dsr.batch_size (the guide: 12) "
                                                     "or finetune.batch_size (the guide: 24).")
        else:
            result = Failed(job=request.kind, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    from engine import distributed

    distributed.finish(together=isinstance(result, Finished))   # torchrun: leave the process group cleanly
    emit(result)
    return result
