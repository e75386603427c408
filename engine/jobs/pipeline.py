"""The ``pipeline`` job: the guide's three commands in one go, each stage using the previous outputs.

Stages: ``recogniser`` (the preset's EdgeFace weights, a finished pretrain run, or a ``pretrain``
run made now) -> ``train-dsr`` (identity losses against that recogniser) -> with ``baselines``,
``finetune-bicubic`` (a ``finetune`` run on bicubic images, same preset, from the same recogniser)
-> ``finetune`` (on that DSR's outputs) -> ``evaluate`` (DSR probes through the DSR-fine-tuned
recogniser, bicubic probes through the bicubic-fine-tuned one when there is one, both also through
the base recogniser, and HR).
Each stage writes its own run directory, chosen by the pipeline before the stage starts and
recorded in the pipeline's ``summary.json`` (rewritten after every change), so
``--resume PIPELINE_RUN_DIR`` reuses the stages that finished, resumes the one that was stopped or
killed from its last.pt, and runs the rest. Stage events are passed on as they come. Under
torchrun the training stages run on every rank; evaluation runs on rank 0 alone.

``folds`` = K repeats the whole pipeline on K subject splits (:mod:`engine.evaluation.folds`):
the dataset's testable subjects are dealt, seeded by ``runtime.seed``, into K disjoint held-out
groups; fold i's dataset is written (hard links) to ``PIPELINE/fold_i/data`` and its stage runs go
to ``PIPELINE/fold_i/``, recorded under ``folds[i-1]`` of the summary, so a resume reuses finished
folds and resumes the unfinished one. The K eval.json files are aggregated (mean, sample standard
deviation, min, max per row and metric) into ``PIPELINE/eval_folds.json`` and the summary.
Recogniser per fold: weights given (``--edgeface`` or ``runtime.edgeface_weights``) are shared by
every fold, since they were trained elsewhere; otherwise *each fold pre-trains its own* on its own
training subjects. A finished pretrain run of the preset is never reused under folds: it was
trained on another split, so it may have seen a fold's held-out identities.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import distributed
from engine.io import atomic
from engine.errors import JobStopped, WeightsError, WorkbenchError
from engine.events import Emit, Event, Failed, Finished, Log, Progress, ignore
from engine.jobs.pipeline_progress import PipelineProgress
from engine.jobs.options import DSROptions, FinetuneOptions, PipelineOptions, PretrainOptions
from engine.jobs.registry import JobRequest, StopFlag, job_function
from engine.presets import load as load_preset
from engine.runs.lifecycle import RunLifecycle
from engine.runs.records import read_evaluation
from engine.runs.status import RunLock, run_state
from engine.runs.run_dir import RunDir, linked_file

JOB = "pipeline"
STAGES = ("recogniser", "train-dsr", "finetune", "evaluate")
BASELINE_STAGE = "finetune-bicubic"          # a finetune run on bicubic images (``baselines``)
STAGE_JOBS = {BASELINE_STAGE: "finetune"}    # stage name -> job kind, where they differ
SHORT_KEYS = ("status", "total_seconds", "stages", "stopped_run", "eval_json", "eval_folds_json", "folds_done")
HEADLINE_KEYS = ("rank1", "rank5", "auc", "eer", "open_set_accuracy", "psnr", "ssim")
FOLDS_FILE = "eval_folds.json"
DEFAULT_VAL_FRACTION = 0.2                   # a fold's val share of each training subject when the manifest has none


def stage_names(baselines: bool) -> tuple[str, ...]:
    return ("recogniser", "train-dsr", *((BASELINE_STAGE,) if baselines else ()), "finetune", "evaluate")


def _pass_on(emit: Emit) -> Emit:
    """Forward a stage's events; its end is reported by the pipeline, not as the pipeline's own end."""
    def forward(event: Event) -> None:
        if not isinstance(event, (Finished, Failed)):
            emit(event)
    return forward


def _new_record(**fields: Any) -> dict[str, Any]:
    return {"stages": {}, "stage_seconds": {}, "stage_runs": {}, **fields}


class _Summary:
    """summary.json of the pipeline run, rewritten after every change (rank 0 only).

    A *record* holds one dataset's stages (``stages``, ``stage_seconds``, ``stage_runs``): the
    summary itself, or one entry of ``folds``.
    """

    def __init__(self, run: RunDir, data: dict[str, Any] | None, write: bool):
        self.run, self.enabled = run, write
        self.data: dict[str, Any] = data or _new_record()
        self.data["status"] = "running"
        self.write()

    def stage_done(self, record: dict[str, Any], name: str, path: Path | None, seconds: float) -> None:
        record["stages"][name] = None if path is None else str(path)
        record["stage_seconds"][name] = round(record["stage_seconds"].get(name, 0) + seconds, 1)
        self.data.pop("stopped_run", None)
        self.write()

    def write(self) -> None:
        if self.enabled:
            self.run.write_summary(self.data)


def _headline(eval_json: Path) -> dict[str, Any]:
    doc = read_evaluation(eval_json) or {}
    return {f"{variant}_{key}": (doc.get(variant) or {}).get(key) for variant in ("dsr", "bicubic", "hr")
            for key in HEADLINE_KEYS}


def _fold_headline(aggregated: dict[str, Any]) -> dict[str, Any]:
    """``{row}_rank1`` = the mean over folds (what the runs table shows), ``{row}_rank1_std`` its spread."""
    out: dict[str, Any] = {}
    for row, metrics in aggregated["rows"].items():
        if "rank1" in metrics:
            out[f"{row}_rank1"] = metrics["rank1"]["mean"]
            out[f"{row}_rank1_std"] = metrics["rank1"]["std"]
    return out


def _given_weights(preset, opts: PipelineOptions) -> Path | None:
    """--edgeface, else runtime.edgeface_weights (checked), else None (never a pretrain run: see folds)."""
    from engine.jobs.recogniser import preset_weights

    if not opts.edgeface:
        return preset_weights(preset)
    path = Path(opts.edgeface).expanduser()
    if not path.is_file():
        raise WeightsError(f"--edgeface is {opts.edgeface!r}, but {path} does not exist. Give an EdgeFace weights "
                           "file, or leave it out to use runtime.edgeface_weights (or, when that is empty, to "
                           "pre-train a recogniser on each fold's training subjects).")
    return path


def _check_resume_options(opts: PipelineOptions, recorded: dict[str, Any], path: Path) -> PipelineOptions:
    """The run's own baselines/folds/distractors; a conflicting value on the resume command is an error."""
    baselines, folds, distractors = bool(recorded.get("baselines")), recorded.get("folds"), recorded.get("distractors")
    if ((opts.baselines and not baselines) or (opts.folds is not None and opts.folds != folds)
            or (opts.distractors is not None and opts.distractors != distractors)):
        shown = "the preset's" if distractors is None else distractors
        raise WorkbenchError(f"{path} was started with baselines={'on' if baselines else 'off'}, "
                             f"folds={folds or 'none'} and distractors={shown}; "
                             "--resume continues it as it was. Leave --baselines, --folds and --distractors out "
                             "when resuming, or start a new pipeline with the options you want.")
    return replace(opts, baselines=baselines, folds=folds, distractors=distractors)


def _check_distractors(preset, opts: PipelineOptions, data: str | None) -> None:
    """A distractor count the dataset cannot meet stops the pipeline before its directory or any training."""
    from engine.evaluation import distractors

    count, origin = distractors.requested(preset, opts.distractors)
    root = data or preset.data.root
    if count and (not root or Path(root).expanduser().is_dir()):
        distractors.check(root or None, count, origin)


def _check_probe_camera(preset, data: str | None) -> None:
    """An unseen-camera spec on a dataset that is degraded already stops the pipeline before any training."""
    from engine.evaluation.cameras import probe_camera

    root = data or preset.data.root
    probe_camera(preset, Path(root).expanduser() if root else None)


def _val_fraction(root: Path) -> float:
    from engine.data.layout import MANIFEST

    try:
        value = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["split"]["val"]
        return float(value) if 0 <= float(value) < 1 else DEFAULT_VAL_FRACTION
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_VAL_FRACTION


def _write_folds(run: RunDir, root: Path, k: int, seed: int) -> list[dict[str, Any]]:
    """Fold records, each with its dataset written to ``run/fold_i/data`` (kept when already complete)."""
    from engine.data.layout import MANIFEST
    from engine.evaluation.folds import layout_items, subject_folds, write_fold_layout

    val_fraction = _val_fraction(root)
    records = []
    for fold in subject_folds(layout_items(root), k, seed):
        folder = run.path / f"fold_{fold.index + 1}"
        data = folder / "data"
        if not (data / MANIFEST).is_file():
            write_fold_layout(root, data, fold, val_fraction=val_fraction, seed=seed)
        records.append(_new_record(fold=fold.index + 1, data_root=str(data), runs_dir=str(folder),
                                   test_subjects=list(fold.test_subjects)))
    return records


def _new_pipeline_dir(preset, run_dir: str | None) -> Path:
    """A new pipeline directory: exactly ``run_dir`` when given (locked before anything is written there;
    one that holds a pipeline already is refused), else runs/<time>-<preset>-pipeline."""
    if not run_dir:
        return RunDir.create(preset.runtime.runs_dir, preset, JOB).path
    target = Path(run_dir).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    lock = RunLock(target)
    lock.acquire()
    try:
        if RunDir(target).summary_path.is_file():
            raise WorkbenchError(f"{target} already holds a pipeline (summary.json). Give a new --run-dir, or "
                                 f"continue that one with `vlr-workbench pipeline --resume {target}`.")
        return RunDir.for_job(preset, JOB, target).path
    except BaseException:
        lock.release()
        raise


def run_pipeline(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    return PipelineRun.open(request, emit, stop).run()


class PipelineRun:
    """One pipeline run: its directory's life (lock, status, stop), summary.json, and the stages."""

    def __init__(self, run: RunDir, preset, opts: PipelineOptions, data: str | None, previous: dict | None,
                 ctx, emit: Emit, stop: StopFlag) -> None:
        self.run_dir, self.preset, self.opts, self.data, self.ctx = run, preset, opts, data, ctx
        self.say = emit if ctx.is_main else ignore
        self.forward = _pass_on(self._annotated(emit))
        lock = RunLock(run.path)
        if ctx.is_main and not lock.adopt():   # --run-dir: taken before the directory was written
            lock.acquire()
        # `vlr-workbench stop PIPELINE_DIR` (or the app) reaches every stage through life.stop
        self.life = RunLifecycle(run.path, JOB, stop, main=ctx.is_main, lock=lock)
        self.stop = self.life.stop
        try:
            record = previous or _new_record()
            if data and not record.get("data_root"):   # a resume killed before the data was resolved uses it too
                record["data_root"] = str(data)
            record["options"] = {"baselines": opts.baselines, "folds": opts.folds, "distractors": opts.distractors}
            self.summary = _Summary(run, record, ctx.is_main)
        except BaseException:      # e.g. a full disk: the directory is not left locked
            lock.release()
            raise
        self.names = stage_names(opts.baselines)
        self.progress = PipelineProgress(self.names, preset, opts.folds)
        self.where: dict[str, Any] = {"stage": self.names[0], "fold": None}   # what runs now (failures, messages)
        self.started = time.perf_counter()

    @classmethod
    def open(cls, request: JobRequest, emit: Emit, stop: StopFlag) -> "PipelineRun":
        """A new pipeline directory, or the one given to --resume with its own preset and options."""
        from engine.runtime import resolve

        opts: PipelineOptions = request.options or PipelineOptions()
        ctx, _ = distributed.setup(resolve(request.preset).device)
        if opts.resume:
            run = RunDir.open(opts.resume)
            preset, previous = load_preset(run.path / "preset.toml"), run.read_summary()
            if previous.get("status") == "done":
                raise WorkbenchError(f"{run.path} is a finished pipeline: nothing to resume. Start a new one with "
                                     f"`vlr-workbench pipeline --preset {preset.name}`.")
            opts = _check_resume_options(opts, previous.get("options") or {}, run.path)
            return cls(run, preset, opts, request.data or previous.get("data_root"), previous, ctx, emit, stop)
        if opts.folds is not None and opts.folds < 2:
            raise WorkbenchError(f"--folds {opts.folds}: K-fold evaluation needs at least 2 folds (or leave --folds "
                                 "out for the single split).")
        if opts.folds and request.preset.dsr.init_weights:
            raise WorkbenchError(f"--folds {opts.folds} with dsr.init_weights = {request.preset.dsr.init_weights!r} "
                                 f"(preset {request.preset.name}): every labelled person is a test person of some "
                                 "fold, so a DSR trained before on this data has seen test faces of the folds. "
                                 "Empty dsr.init_weights for --folds, or use the warm start on the single split.")
        from engine.data.resolve import check_data_root

        check_data_root(request.preset, request.data)   # a --data that is no folder leaves no run directory behind
        _check_distractors(request.preset, opts, request.data)
        _check_probe_camera(request.preset, request.data)
        _given_weights(request.preset, opts)     # a missing weights file stops it before its directory exists
        path = _new_pipeline_dir(request.preset, opts.run_dir) if ctx.is_main else None
        run = RunDir(Path(distributed.broadcast(str(path) if path else None, ctx)))
        return cls(run, request.preset, opts, request.data, None, ctx, emit, stop)

    # -- the run

    def run(self) -> Finished:
        from engine.data.resolve import job_data_root

        try:
            self.stop.check()
            data_root = job_data_root(self.preset, self.data, self.say, JOB)
            self.summary.data["data_root"] = str(data_root)
            self.summary.write()
            if not self.opts.folds:
                self.run_stages(self.summary.data, str(data_root), self.preset.runtime.runs_dir, folds=False)
            else:
                self.run_folds(data_root)
        except JobStopped:
            return self.finish(stopped=True)
        except BaseException as exc:
            self.fail(exc)
            raise
        return self.finish(stopped=False)

    def run_folds(self, data_root: Path) -> None:
        """Every fold's stages (finished folds reused), then the aggregate of their eval.json files."""
        from engine.evaluation.folds import aggregate_eval_files

        summary, opts, ctx = self.summary, self.opts, self.ctx
        self.where["stage"] = "folds"
        if not summary.data.get("folds"):
            self.say(Log(JOB, f"writing {opts.folds} fold datasets (seed {self.preset.runtime.seed}) under "
                              f"{self.run_dir.path}"))
            seed = self.preset.runtime.seed
            records = _write_folds(self.run_dir, data_root, opts.folds, seed) if ctx.is_main else None
            summary.data["folds"] = distributed.broadcast(records, ctx)
            summary.data["fold_seed"] = self.preset.runtime.seed
            summary.stage_done(summary.data, "folds", None, 0.0)
        for record in summary.data["folds"]:
            self.where["fold"] = record["fold"]
            if "evaluate" in record["stages"]:
                self.say(Log(JOB, f"fold {record['fold']}/{opts.folds}: reusing the finished fold "
                                  f"({record['eval_json']})"))
                continue
            self.say(Log(JOB, f"fold {record['fold']}/{opts.folds}: {len(record['test_subjects'])} held-out "
                              f"subjects, data {record['data_root']}"))
            summary.data["stage_runs"] = record["stage_runs"]   # the current fold's: what `attach` follows
            self.run_stages(record, record["data_root"], record["runs_dir"], folds=True)
            summary.stage_done(summary.data, f"fold_{record['fold']}", Path(record["runs_dir"]), 0.0)
        self.where.update(fold=None, stage="aggregate")
        if ctx.is_main:
            aggregated = aggregate_eval_files([linked_file(self.run_dir.path, r["eval_json"])
                                               for r in summary.data["folds"]])
            aggregated.update(seed=summary.data["fold_seed"],
                              test_subjects=[r["test_subjects"] for r in summary.data["folds"]])
            folds_file = atomic.write_json(self.run_dir.path / FOLDS_FILE, aggregated)
            summary.data["eval_folds_json"] = str(folds_file)
            summary.data["folds_done"] = len(summary.data["folds"])
            summary.data.update(_fold_headline(aggregated))
            summary.stage_done(summary.data, "aggregate", None, 0.0)
        distributed.barrier(ctx)

    def run_stages(self, record: dict, data: str, runs_dir: str, folds: bool) -> None:
        """Every stage of one dataset (the whole data, or one fold), recorded in ``record``."""
        recogniser = self.recogniser_stage(record, data, runs_dir, folds)
        self.stop.check()
        self.announce("train-dsr")
        dsr = self.stage_run(record, "train-dsr", DSROptions(edgeface=str(recogniser)), runs_dir, data) / "best.pt"
        self.stop.check()
        bicubic = None
        if self.opts.baselines:   # before the DSR fine-tuning, so the preset's latest finetune run stays the DSR one
            self.announce(BASELINE_STAGE)
            bicubic = self.stage_run(record, BASELINE_STAGE, FinetuneOptions(dsr=None, edgeface=str(recogniser)),
                                     runs_dir, data) / "best.pt"
            self.stop.check()
        self.announce("finetune")
        finetuned = self.stage_run(record, "finetune", FinetuneOptions(dsr=str(dsr), edgeface=str(recogniser)),
                                   runs_dir, data) / "best.pt"
        self.stop.check()
        self.announce("evaluate")
        options = {"dsr": str(dsr), "edgeface": str(finetuned), "edgeface_base": str(recogniser)}
        if bicubic is not None:
            options["edgeface_bicubic"] = str(bicubic)
        if self.opts.bootstrap is not None:
            options["bootstrap"] = self.opts.bootstrap
        if self.opts.distractors is not None:
            options["distractors"] = self.opts.distractors
        self.evaluate(record, options, runs_dir, data)
        distributed.barrier(self.ctx)

    def recogniser_stage(self, record: dict, data: str, runs_dir: str, folds: bool) -> Path:
        """The recogniser of this dataset: recorded, given, a finished pretrain run (not under folds), or a
        pretrain stage run made now (recorded, so --resume continues it)."""
        from engine.jobs.recogniser import existing_recogniser, pretrain_epochs

        stage = "recogniser"
        self.announce(stage)
        self.stop.check()
        if stage in record["stages"]:
            return Path(record["recogniser"])
        t0 = time.perf_counter()
        if folds:
            recogniser = _given_weights(self.preset, self.opts)
        else:
            recogniser = (Path(self.opts.edgeface) if self.opts.edgeface
                          else existing_recogniser(self.preset, Path(data), self.say))
        made = None
        if recogniser is None:
            self.say(Log(JOB, f"no EdgeFace weights: pre-training {self.preset.runtime.edgeface_variant} on the HR "
                              "images" + (" of this fold's training subjects" if folds else "")))
            self.life.status.update(force=True, stage="pretrain")   # `attach` follows stage_runs["pretrain"]
            made = self.stage_run(record, "pretrain", PretrainOptions(epochs=pretrain_epochs(self.preset)),
                                  runs_dir, data)
            recogniser = made / "best.pt"
        record["recogniser"] = str(recogniser)
        self.summary.stage_done(record, stage, made, time.perf_counter() - t0)
        return recogniser

    def announce(self, kind: str) -> None:
        self.where["stage"] = kind
        fold = self.where["fold"]
        prefix = f"fold {fold}/{self.opts.folds}, " if fold else ""
        self.say(Log(JOB, f"{prefix}stage {self.names.index(kind) + 1}/{len(self.names)}: {kind}"))
        self.life.status.update(force=True, stage=kind, fold=fold, **self.progress.at(kind, fold))

    def _annotated(self, emit: Emit) -> Emit:
        """Stage progress with the pipeline's stage n/N and overall ETA (also in its status, for followers)."""
        def annotate(event: Event) -> None:
            if isinstance(event, Progress):
                event = self.progress.annotate(event)
                self.life.status.update(overall_eta_seconds=event.overall_eta_seconds)
            emit(event)
        return annotate

    def stage_run(self, record: dict, name: str, options: Any, runs_dir: str, data: str) -> Path:
        """Run (or resume) a training stage in a run directory recorded before it starts; its run dir when done."""
        done = record["stages"].get(name)
        if done:
            self.say(Log(JOB, f"{name}: reusing the finished stage run {done}"))
            return Path(done)
        kind = STAGE_JOBS.get(name, name)
        recorded = record["stage_runs"].get(name)
        if recorded and run_state(recorded) == "finished":   # killed after the stage ended, before it was recorded
            self.say(Log(JOB, f"{name}: the stage run {recorded} had finished; reusing it"))
            self.summary.stage_done(record, name, Path(recorded), 0.0)
            return Path(recorded)
        if recorded and (Path(recorded) / "last.pt").is_file():
            self.say(Log(JOB, f"{name}: resuming the unfinished stage run {recorded}"))
            options = replace(options, resume=recorded, run_dir=None, allow_other_data=self.opts.allow_other_data)
        else:
            if not recorded:
                recorded = self.new_run_dir(runs_dir, kind)
                record["stage_runs"][name] = recorded
                self.summary.write()
            options = replace(options, run_dir=recorded)
        t0 = time.perf_counter()
        result = job_function(kind)(JobRequest(kind, self.preset, data=data, options=options), self.forward, self.stop)
        if result.stopped:
            self.summary.data["stopped_run"] = str(result.run_dir)   # holds last.pt: --resume continues it
            raise JobStopped()
        self.summary.stage_done(record, name, Path(result.run_dir), time.perf_counter() - t0)
        return Path(result.run_dir)

    def new_run_dir(self, runs_dir: str, kind: str) -> str:
        path = RunDir.create(runs_dir, self.preset, kind).path if self.ctx.is_main else None
        return distributed.broadcast(str(path) if path else None, self.ctx)

    def evaluate(self, record: dict, options: dict[str, Any], runs_dir: str, data: str) -> None:
        """The evaluate stage on rank 0, in a run directory recorded before it starts (re-run when unfinished)."""
        if not self.ctx.is_main:
            return
        recorded = record["stage_runs"].get("evaluate")
        if not recorded:
            recorded = str(RunDir.create(runs_dir, self.preset, "evaluate").path)
            record["stage_runs"]["evaluate"] = recorded
            self.summary.write()
        t0 = time.perf_counter()
        if (Path(recorded) / "summary.json").is_file() and (Path(recorded) / "eval.json").is_file():
            self.say(Log(JOB, f"evaluate: the stage run {recorded} had finished; reusing it"))   # killed after it
            result = Finished(job="evaluate", run_dir=Path(recorded), summary={})
        else:
            request = JobRequest("evaluate", self.preset, data=data, options={**options, "run_dir": recorded})
            result = job_function("evaluate")(request, self.forward, self.stop)
        if result.stopped:
            raise JobStopped()
        record["eval_json"] = str((Path(result.run_dir) / "eval.json").absolute())   # runs_dir may be relative
        record.update(_headline(Path(record["eval_json"])))
        self.summary.stage_done(record, "evaluate", result.run_dir, time.perf_counter() - t0)

    # -- the end

    def finished_text(self) -> str:
        data = self.summary.data
        if not data.get("folds"):
            return ", ".join(data["stages"]) or "none"
        return "; ".join(f"fold {r['fold']}: {', '.join(r['stages']) or 'none'}" for r in data["folds"])

    def finish(self, stopped: bool) -> Finished:
        data = self.summary.data
        data["status"] = "stopped" if stopped else "done"
        data["total_seconds"] = round(data.get("total_seconds", 0) + time.perf_counter() - self.started, 1)
        self.summary.write()
        self.life.end("stopped" if stopped else "finished")
        if stopped:
            where = self.where
            during = f"fold {where['fold']}, {where['stage']}" if where["fold"] else where["stage"]
            self.say(Log(JOB, f"pipeline stopped during {during}; finished stages: {self.finished_text()}. "
                              f"`vlr-workbench pipeline --resume {self.run_dir.path}` continues from there",
                         level="warning"))
        # the event carries the short version (the CLI prints it); summary.json keeps everything
        short = {k: v for k, v in data.items() if k in SHORT_KEYS or k.endswith("_rank1") or k.endswith("_rank1_std")}
        return Finished(job=JOB, run_dir=self.run_dir.path, summary=short, stopped=stopped)

    def fail(self, exc: BaseException) -> None:
        error = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
        self.summary.data.update(status="failed", failed_stage=self.where["stage"], error=error)
        if self.where["fold"]:
            self.summary.data["failed_fold"] = self.where["fold"]
        try:
            self.summary.write()
        finally:
            self.life.end("failed", error)
