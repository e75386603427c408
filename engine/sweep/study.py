"""Job ``sweep``: an Optuna study over preset keys; each trial is an ordinary run of a job.

The study lives in a storage every worker can share: by default Optuna's journal file under
``runtime.runs_dir/sweeps/`` (safe for many processes on one host), or an RDB URL (``--storage``;
PostgreSQL for several machines; SQLite locks under parallel writers). A trial asks the sampler for
values, saves them as the trial's preset in its own run directory (``sweep.json`` there names the
study and trial) and runs the job there, as a user would; the study records the run directory.
Per-epoch ``val.METRIC`` goes to the pruner, which stops a hopeless trial through its stop flag.
Running the same command again resumes (or joins) the study: finished trials are kept, a trial left
RUNNING by a dead process is marked failed and its values are tried again, and the budget
(``trials``) counts every finished trial. A stop (Ctrl-C) ends the running trial with its checkpoint;
its values are queued for the resume.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.errors import JobStopped
from engine.errors import StudyStorageLost as StorageLost
from engine.errors import WorkbenchError
from engine.events import Emit, Failed, Finished, Log, Metrics
from engine.io import atomic
from engine.jobs.options import SweepOptions
from engine.jobs.registry import JOBS, JobRequest, StopFlag, run_job, sweep_trial_jobs
from engine.presets import Preset, derive, load, save
from engine.runs.run_dir import RunDir
from engine.runs.status import FileStop, StatusWriter, run_state
from engine.sweep import controllers
from engine.sweep.recogniser import pin_study_recogniser
from engine.sweep.places import base_preset_file, check_study_name, control_dir, journal_path, remember_study, sweeps_dir
from engine.sweep.objective import check_metric_names, check_objective, objective_value
from engine.sweep.space import SearchSpace, load_space
from engine.sweep.storage import check_storage_url, open_storage, storage_error

JOB = "sweep"
SWEEP_FILE = "sweep.json"
STARTING_SECONDS = 120.0  # a RUNNING trial asked this recently whose run has no status yet is starting, not dead
TIPS_EVERY = 3           # with --from-run: after every this many finished trials, the best trial's tips are queued
PRUNE_STARTUP_TRIALS = 5   # complete trials before the median pruner judges (2 pruned on 0.001 dB: issue 36)
PRUNE_WARMUP_EPOCHS = 2    # a trial's first epochs are never pruned (their val metric is still noise)
AGAIN = (". When the server answers again, run the same command: the sweep goes on (a stopped trial resumes from "
         "its checkpoint, a finished one's result is recorded; nothing runs twice).")


def run_sweep(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    opts: SweepOptions = request.options or SweepOptions()
    preset = request.preset
    space, study = check_sweep(preset, opts)
    grid_size = math.prod(len(values) for values in space.grid().values()) if opts.sampler == "grid" else None
    if grid_size is not None and opts.trials > grid_size + len(space.listed):   # listed trials take no grid point
        listed = f" and the space lists {len(space.listed)} trial(s)" if space.listed else ""
        emit(Log(JOB, f"the grid has {grid_size} points{listed}: --trials {opts.trials} is capped to "
                      f"{grid_size + len(space.listed)}"))
        opts = replace(opts, trials=grid_size + len(space.listed))
    control = control_dir(preset.runtime.runs_dir, study)       # before the storage: a file there is refused first
    optuna_study = open_study(preset, opts, space, study, notify=lambda text: emit(Log(JOB, text, "warning")))
    record_setup(optuna_study, preset, opts)
    rank, seed = controllers.register(optuna_study, base_seed(preset, opts), opts.sampler != "grid")
    optuna_study.sampler = make_sampler(opts, space, seed)     # a joining or resuming controller draws new points
    emit(Log(JOB, f"controller {rank + 1} of study {study}: sampler seed {seed}"
                  + (" (the study's own)" if rank == 0 else f" (controller {rank + 1}'s: new points, not the first's)")))
    save(preset, base_preset_file(preset.runtime.runs_dir, study, preset.name), overwrite=True)   # for save-best
    unindexed = remember_study(study, preset.runtime.runs_dir)
    if unindexed:
        emit(Log(JOB, unindexed, "warning"))
    status = StatusWriter(control, JOB)          # this host's controller: live or dead, and its stop.request
    stop = FileStop(stop, control)
    try:
        _fail_dead_trials(optuna_study, opts, emit)
        enqueue_listed(optuna_study, preset, space, emit)
        if opts.from_run:
            enqueue_tips(optuna_study, Path(opts.from_run), space, emit)
        opts = _budget_for_listed(optuna_study, space, opts, emit)
        trials_preset = pin_study_recogniser(optuna_study, preset, space, opts, request.data, rank, emit, stop)
        _run_trials(optuna_study, trials_preset, space, request.data, opts, emit, stop)
    except JobStopped:
        status.end("stopped", "stopped while the study's recogniser was pre-trained")
        raise
    except BaseException as exc:
        status.end("failed", str(exc))
        raise
    status.end("stopped" if stop.is_set() else "finished")
    return Finished(JOB, None, _summary(optuna_study, preset, opts), stopped=stop.is_set())


def _run_trials(study, preset: Preset, space: SearchSpace, data: str | None, opts: SweepOptions, emit: Emit,
                stop: StopFlag) -> None:
    budget = _Budget(opts, stop)
    if opts.parallel > 1:
        _run_parallel(study, preset, space, data, opts, emit, budget)
    while opts.parallel == 1 and claimed(study) < opts.trials and not budget.is_set():
        _run_trial(study, preset, space, data, opts, emit, stop)
        done = _finished(study)
        if opts.from_run and done % TIPS_EVERY == 0 and done < opts.trials:
            _enqueue_best_tips(study, space, emit)


def _budget_for_listed(study, space: SearchSpace, opts: SweepOptions, emit: Emit) -> SweepOptions:
    """Every listed trial waiting in the study runs: --trials is raised to hold them (a space of [[trials]] alone
    runs exactly those, also when more are added to a study that ran before)."""
    from optuna.trial import TrialState

    labels = {listed.label for listed in space.listed}
    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    listed = [t.number for t in queued if t.user_attrs.get("label") in labels]
    # Optuna starts waiting trials in number order: those queued before the last listed one run first
    waiting = sum(t.number <= max(listed) for t in queued) if space.params and listed else len(queued)
    needed = claimed(study) + waiting
    if space.params and (not listed or needed <= opts.trials):
        return opts
    if space.params:
        emit(Log(JOB, f"{waiting} queued trial(s), {len(listed)} of them listed, wait to run: --trials "
                      f"{opts.trials} is raised to {needed}"))
    elif needed != opts.trials:
        emit(Log(JOB, f"the space lists trials and no [params]: this sweep runs the {waiting} queued trial(s) not "
                      f"run before (--trials {opts.trials} is read as {needed})"))
    return replace(opts, trials=needed)


def check_sweep(preset: Preset, opts: SweepOptions) -> tuple[SearchSpace, str]:
    """The sweep's space and study name; a WorkbenchError (nothing started) for any bad option."""
    if not opts.space:
        raise WorkbenchError("sweep needs --space FILE: a TOML [params] table of preset keys with ranges or "
                             "choices (see `vlr-workbench sweep --help`).")
    if opts.job not in sweep_trial_jobs():
        raise WorkbenchError(f"--job {opts.job}: a trial runs one of {', '.join(sweep_trial_jobs())}.")
    for flag, direction in (("--direction", opts.direction), ("--direction2", opts.direction2)):
        if direction not in ("maximize", "minimize"):
            raise WorkbenchError(f"{flag} {direction}: maximize or minimize.")
    if opts.sampler not in ("tpe", "random", "grid"):
        raise WorkbenchError(f"--sampler {opts.sampler}: tpe (the default), random or grid.")
    if opts.trials < 1 or opts.parallel < 1 or opts.gpus_per_trial < 1:
        raise WorkbenchError(f"--trials {opts.trials}, --parallel {opts.parallel}, --gpus-per-trial "
                             f"{opts.gpus_per_trial}: each at least 1.")
    if (opts.baselines or opts.folds is not None) and opts.job != "pipeline":
        raise WorkbenchError(f"--baselines and --folds apply to pipeline trials; this sweep's trials run {opts.job}. "
                             "Add --job pipeline (with an eval.* objective), or leave them out.")
    check_metric_names(opts.objective, opts.job)
    check_storage_url(opts.storage)
    if opts.timeout is not None and not (math.isfinite(opts.timeout) and opts.timeout > 0):
        raise WorkbenchError(f"--timeout {opts.timeout}: a number of seconds above 0 (the wall-time budget after "
                             "which no trial starts), or leave it out.")
    if opts.objective2:
        check_objective(opts.objective2)
    space = load_space(opts.space, preset)
    if opts.sampler == "grid":
        space.grid()                          # every parameter has a step or choices
    return space, check_study_name(opts.study or f"{preset.name}-sweep")


def storage_for(preset: Preset, opts: SweepOptions, study: str, notify=None):
    """The study's storage: the RDB URL given (patient for ``opts.storage_wait``, outages told to ``notify``),
    else a journal file under runs_dir/sweeps."""
    return open_storage(opts.storage, journal_path(preset.runtime.runs_dir, study), opts.storage_wait, notify)


def base_seed(preset: Preset, opts: SweepOptions) -> int:
    return preset.runtime.seed if opts.seed is None else opts.seed


def make_sampler(opts: SweepOptions, space: SearchSpace, seed: int):
    import optuna

    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "grid": lambda: optuna.samplers.GridSampler(space.grid(), seed=seed)}
    return samplers[opts.sampler]()


def open_study(preset: Preset, opts: SweepOptions, space: SearchSpace, study: str, notify=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS)
              if pruning_metric(opts) else optuna.pruners.NopPruner())
    try:
        return optuna.create_study(study_name=study, storage=storage_for(preset, opts, study, notify),
                                   directions=[opts.direction] + ([opts.direction2] if opts.objective2 else []),
                                   sampler=make_sampler(opts, space, base_seed(preset, opts)), pruner=pruner,
                                   load_if_exists=True)
    except (ImportError, OSError, ValueError) as exc:
        raise _storage_error(opts, exc) from None
    except Exception as exc:                          # sqlalchemy's errors: no import of sqlalchemy here
        if type(exc).__module__.startswith("sqlalchemy"):
            raise _storage_error(opts, exc) from None
        raise


def _storage_error(opts: SweepOptions, exc: Exception) -> WorkbenchError:
    return storage_error(opts.storage, exc)


def tell(study, trial, values=None, state=None) -> None:
    """``study.tell``; Optuna's grid sampler calls ``study.stop()`` once its grid is done, which raises outside
    ``optimize()`` after the trial's result is stored: that one error is expected here (the budget is capped
    to the grid's size). So is its KeyError 'grid_id' for a queued trial (listed, a tip) told while one grid
    point is left: such a trial has no grid point; its result is stored all the same."""
    try:
        study.tell(trial, values, state=state)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise
    except KeyError as exc:
        if exc.args != ("grid_id",):
            raise


def pruning_rule(opts: SweepOptions) -> str:
    """What the pruner does, in words (``sweep show`` and the study's setup say it)."""
    metric = pruning_metric(opts)
    if metric is None:
        return "no pruning"
    return (f"median pruning on val {metric}: from epoch {PRUNE_WARMUP_EPOCHS + 1} of a trial, once "
            f"{PRUNE_STARTUP_TRIALS} trials completed, a trial below the median of the others at that epoch stops")


def record_setup(study, preset: Preset, opts: SweepOptions) -> None:
    """The study remembers what its trials run and score (for its report); joining or resuming it with another
    objective or job is refused, since its values would not compare."""
    setup = {"objective": opts.objective, "objective2": opts.objective2, "job": opts.job, "base_preset": preset.name,
             "baselines": opts.baselines, "folds": opts.folds, "pruning": pruning_rule(opts)}
    recorded = study.user_attrs.get("setup")
    if recorded is None:
        study.set_user_attr("setup", setup)
        return
    if recorded.get("base_preset") not in (None, preset.name):
        raise WorkbenchError(f"study {study.study_name} was started from preset {recorded['base_preset']!r}, not "
                             f"{preset.name!r}: its trials would not compare with this command's. Join it with "
                             f"--preset {recorded['base_preset']}, or give a new --study NAME.")
    changed = [key for key in ("objective", "objective2", "job", "baselines", "folds")
               if recorded.get(key) != setup[key]]
    if changed:
        was = ", ".join(f"{key}={recorded.get(key)!r}" for key in changed)
        raise WorkbenchError(f"study {study.study_name} was started with {was}: its trials would not compare with "
                             f"this command's. Give the same options to resume or join it, or a new --study NAME.")


def pruning_metric(opts: SweepOptions) -> str | None:
    """The per-epoch val metric the pruner judges; None when nothing is pruned (off, grid, a non-val objective,
    or two objectives: Optuna prunes single-objective studies only)."""
    if not opts.prune or opts.sampler == "grid" or opts.objective2 or not opts.objective.startswith("val."):
        return None
    return opts.objective.split(".", 1)[1]


def _finished(study) -> int:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}        # failed by a stop or a death, run again
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get("surplus")
               for t in trials)


def claimed(study) -> int:
    """Finished trials and those running anywhere (every worker of the study): what the budget counts."""
    from optuna.trial import TrialState

    return _finished(study) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def surplus(study, trial, budget: int) -> bool:
    """Whether ``trial`` (just asked) is beyond the budget because other workers asked at the same moment: the
    running trials are ranked by number and the latest ones give way, so exactly the budget runs."""
    from optuna.trial import TrialState

    running = sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    return trial.number in running and running.index(trial.number) >= budget - _finished(study)


def give_way(study, trial) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("surplus", True)
    tell(study, trial, state=TrialState.FAIL)


def _fail_dead_trials(study, opts: SweepOptions, emit: Emit) -> None:
    """Trials left RUNNING whose run is not running: a finished run's result is recorded (its controller lost
    the storage before telling it); any other (its process died, or it stopped when the storage was lost) is
    failed and its values queued again, resuming its run where it has a checkpoint."""
    from optuna.trial import Trial, TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _maybe_live(trial):
            continue                                      # another worker's live (or just starting) trial
        run_dir = trial.user_attrs.get("run_dir")
        state = run_state(run_dir) if run_dir else "unknown"
        if state == "finished" and not _controller_gone(trial, Path(run_dir)):
            continue                                      # its controller is about to tell it
        if state == "finished":
            emit(Log(JOB, f"trial {trial.number} ({run_dir}) finished while the study's storage did not answer: "
                          "its result is recorded now"))
            tell_result(study, Trial(study, trial._trial_id), trial.params, Path(run_dir),
                        Finished(opts.job, Path(run_dir)), None, opts, emit)
            continue
        tell(study, trial.number, state=TrialState.FAIL)
        resumes = _requeue(study, trial, trial.params, opts.job)
        gone = "was stopped with its run" if state == "stopped" else "was left running by a process that is gone"
        emit(Log(JOB, f"trial {trial.number} ({run_dir}) {gone}: failed; "
                      + ("it resumes from its checkpoint" if resumes else "its values run again")))


def _controller_gone(trial, run_dir: Path) -> bool:
    """The controller that asked ``trial`` can no longer tell it: its process is gone from this host, or (another
    host, or a trial from before controllers were recorded) its run ended more than STARTING_SECONDS ago."""
    import socket

    from engine.io.atomic import pid_alive
    from engine.runs.status import read_status

    asker = trial.user_attrs.get("controller") or {}
    if asker.get("host") == socket.gethostname():
        return not pid_alive(asker.get("pid"))
    try:
        ended = float(read_status(run_dir).get("heartbeat") or 0.0)
    except (TypeError, ValueError):
        ended = 0.0
    return time.time() - ended > STARTING_SECONDS


def _maybe_live(trial) -> bool:
    """A RUNNING trial whose run is running, or that was asked moments ago and whose job has not written a
    status yet (another worker is starting it)."""
    run_dir = trial.user_attrs.get("run_dir")
    state = run_state(run_dir) if run_dir else "unknown"
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return state == "running" or state == "unknown" and time.time() - started < STARTING_SECONDS


def _requeue(study, trial, params: dict[str, Any], job: str) -> bool:
    """Queue ``trial`` once more (once: a second worker resuming the same study does not): it resumes its run
    when the run holds a resumable checkpoint, else its values run again. True when it resumes."""
    if any(t.user_attrs.get("retry_of") == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    attrs = {key: trial.user_attrs[key] for key in ("label", "patch") if key in trial.user_attrs}
    run_dir, resume_file = trial.user_attrs.get("run_dir"), JOBS[job].resume_file
    resumes = bool(run_dir and resume_file and (Path(run_dir) / resume_file).is_file())
    study.enqueue_trial(params, user_attrs={**attrs, "retry_of": trial.number,
                                            **({"resume": run_dir} if resumes else {})})
    return resumes


def _new_trial(study, base: Preset, space: SearchSpace, opts: SweepOptions, emit: Emit,
               runtime: dict[str, Any] | None = None):
    """Ask for a trial and write its run directory (its preset, sweep.json): (trial, changes, run)."""
    trial = study.ask()
    if surplus(study, trial, opts.trials):
        give_way(study, trial)
        return None
    changes = space.suggest(trial)
    patch = trial.user_attrs.get("patch") or {}                  # a tip's keys outside the search space
    preset = base.with_changes({**patch, **(runtime or {}), **changes})
    resume = trial.user_attrs.get("resume")                      # a stopped or dead trial's run, continued
    run = RunDir(Path(resume)) if resume else RunDir.create(preset.runtime.runs_dir, preset, opts.job)
    atomic.write_json(run.path / SWEEP_FILE, {"study": study.study_name, "trial": trial.number, "params": changes,
                                              "objective": opts.objective, "direction": opts.direction})
    trial.set_user_attr("run_dir", str(run.path))
    trial.set_user_attr("controller", controllers.this_controller())      # who tells it (_controller_gone)
    label = trial.user_attrs.get("label")
    emit(Log(JOB, f"trial {trial.number}{f' ({label})' if label else ''}: "
                  f"{_shown({**patch, **changes}) or 'the base preset'} in "
                  f"{run.path.name}"))
    return trial, changes, run


def _run_trial(study, base: Preset, space: SearchSpace, data: str | None, opts: SweepOptions, emit: Emit,
               stop: StopFlag) -> None:
    """One trial in this process: its job runs here, its val metric reported to the pruner on the way."""
    try:
        asked = _new_trial(study, base, space, opts, emit)
    except StorageLost as lost:
        raise StorageLost(f"{lost}; no trial had started{AGAIN}") from None
    if asked is None:                                   # another worker took the last place of the budget
        return
    trial, changes, run = asked
    pruner = _PruneOnVal(trial, opts, stop, emit)
    result = run_job(JobRequest(opts.job, _trial_preset(run), data=data, options=_where(trial, run, opts)),
                     pruner.emit, pruner.stop)
    where = f"trial {trial.number}'s run {run.path}"
    if pruner.lost is not None:
        ended = "stopped with its checkpoint" if getattr(result, "stopped", False) else "ended"
        raise StorageLost(f"{pruner.lost}; {where} {ended}{AGAIN}")
    try:
        tell_result(study, trial, changes, run.path, result, pruner.pruned_at, opts, emit)
    except StorageLost as lost:
        raise StorageLost(f"{lost}; {where} ended before its result could be recorded{AGAIN}") from None


def _where(trial, run: RunDir, opts: SweepOptions) -> dict[str, Any]:
    """The trial job's options: resume its run or write a new one there; a pipeline's baselines and folds."""
    where: dict[str, Any] = {"resume": str(run.path)} if trial.user_attrs.get("resume") else {"run_dir": str(run.path)}
    if opts.job == "pipeline":
        where.update(baselines=opts.baselines, folds=opts.folds)
    return where


def _trial_preset(run: RunDir) -> Preset:
    from engine.presets import load

    return load(run.path / "preset.toml")


def tell_result(study, trial, changes: dict[str, Any], run_dir: Path, result, pruned_at: int | None,
                opts: SweepOptions, emit: Emit) -> None:
    """Tell the study how the trial's run ended: failed, pruned, stopped (queued again) or its objective."""
    from optuna.trial import TrialState

    if isinstance(result, Failed):
        trial.set_user_attr("error", result.error[:500])
        tell(study, trial, state=TrialState.FAIL)
        emit(Log(JOB, f"trial {trial.number} failed (the sweep goes on): {result.error}", "warning"))
    elif pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", pruned_at)
        tell(study, trial, state=TrialState.PRUNED)
        emit(Log(JOB, f"trial {trial.number} pruned at epoch {pruned_at}"))
    elif result.stopped:
        trial.set_user_attr("stopped", True)          # shown as stopped, not failed (it resumes)
        tell(study, trial, state=TrialState.FAIL)
        _requeue(study, trial, changes, opts.job)
        emit(Log(JOB, f"trial {trial.number} stopped: it resumes from its checkpoint when the sweep resumes",
                 "warning"))
    else:
        try:
            values = [objective_value(run_dir, name, direction == "maximize") for name, direction in
                      ((opts.objective, opts.direction), (opts.objective2, opts.direction2)) if name]
        except WorkbenchError as missing:        # every trial would miss it: stop now, the trial told, not RUNNING
            trial.set_user_attr("error", str(missing)[:500])
            tell(study, trial, state=TrialState.FAIL)
            raise WorkbenchError(f"{missing} The sweep stops here (trial {trial.number} is recorded as failed): start "
                                 "it again under a new --study with an objective its trials record.") from None
        camera = trial_camera(run_dir)
        if camera:
            trial.set_user_attr("camera", camera)          # the camera protocol the objective was measured on
        tell(study, trial, values if len(values) > 1 else values[0])
        emit(Log(JOB, f"trial {trial.number}: " + ", ".join(f"{name} = {value:.4g}" for name, value in
                                                           zip((opts.objective, opts.objective2), values))))


def trial_camera(run_dir: Path) -> str:
    """The camera protocol of a trial's evaluation in words ('' for a training-only trial, a clean or an old one)."""
    from engine.sweep.objective import evaluation_camera, run_evaluation

    return evaluation_camera(*run_evaluation(run_dir))


def _run_parallel(study, base: Preset, space: SearchSpace, data: str | None, opts: SweepOptions, emit: Emit,
                  stop: StopFlag) -> None:
    from engine.jobs.process import start_detached
    from engine.runs.follow import RunFollower
    from engine.sweep.parallel import LiveTrial, run_parallel

    metric = pruning_metric(opts)

    def start(study, slot):
        runtime = {"runtime.num_threads": slot.threads} if slot.threads else {}
        asked = _new_trial(study, base, space, opts, emit, runtime)
        if asked is None:
            return None
        trial, changes, run = asked
        options = {**_where(trial, run, opts), "nproc": slot.nproc if slot.nproc > 1 else None}
        job = start_detached(opts.job, _trial_preset(run), data, options, run_dir=run.path, env=slot.env)
        return LiveTrial(trial, job, RunFollower(run.path), slot, changes, metric)

    def finish(study, live):
        tell_result(study, live.trial, live.changes, live.job.run_dir, live.ended, live.pruned_at, opts, emit)

    try:
        run_parallel(study, opts, emit, stop, start, finish, claimed)
    except StorageLost as lost:
        raise StorageLost(f"{lost}{AGAIN}") from None


class _Budget(StopFlag):
    """The sweep's stop as new trials see it: a user's stop, or the wall-time budget spent (``--timeout``;
    the running trials end normally then)."""

    def __init__(self, opts: SweepOptions, stop: StopFlag) -> None:
        super().__init__()
        self.outer, self.deadline = stop, time.monotonic() + opts.timeout if opts.timeout else None

    def is_set(self) -> bool:
        return self.outer.is_set() or self.deadline is not None and time.monotonic() >= self.deadline

    def user_stop(self) -> bool:
        return self.outer.is_set()


class _PruneOnVal:
    """The trial's events pass on; each epoch's val.METRIC is reported, and a hopeless trial is stopped."""

    def __init__(self, trial, opts: SweepOptions, stop: StopFlag, emit: Emit) -> None:
        self.trial, self.forward, self.outer = trial, emit, stop
        self.metric = pruning_metric(opts)
        self.stop, self.pruned_at, self.lost = _EitherStop(stop), None, None

    def emit(self, event) -> None:
        if (isinstance(event, Metrics) and event.split == "val" and self.metric in event.values
                and self.pruned_at is None and self.lost is None):
            try:
                self.trial.report(float(event.values[self.metric]), event.epoch)
                prune = self.trial.should_prune()
            except StorageLost as lost:          # the server did not come back in time: stop with a checkpoint
                self.lost, prune = lost, False
                self.stop.own.set()
            if prune:
                self.pruned_at = event.epoch
                self.stop.own.set()
        if not isinstance(event, (Finished, Failed)):
            self.forward(event)


class _EitherStop(StopFlag):
    """Set by the sweep's own stop (Ctrl-C) or by the pruner."""

    def __init__(self, outer: StopFlag) -> None:
        super().__init__()
        self.outer, self.own = outer, StopFlag()

    def is_set(self) -> bool:
        return self.outer.is_set() or self.own.is_set()

    def set(self) -> None:
        self.own.set()

    def check(self) -> None:
        self.outer.check()
        self.own.check()


def enqueue_tips(study, run_dir: Path, space: SearchSpace, emit: Emit, base: bool = True) -> int:
    """Queue ``run_dir``'s own preset (``base``) and each of its tips, each once per study; how many were
    queued."""
    from engine.tips import tips_for_run

    labels = {t.user_attrs.get("label") for t in study.get_trials(deepcopy=False)}
    run_preset, tips, _ = tips_for_run(run_dir)
    seeds = [(f"base: {run_dir.name}", {})] * base + [(f"tip: {tip.title} ({run_dir.name})", tip.patch) for tip in tips]
    queued = 0
    for label, patch in seeds:
        if label in labels:
            continue
        values = run_preset.with_changes(patch)
        params = {param.key: values.get(param.key) for param in space.params}
        study.enqueue_trial(params, user_attrs={"label": label, "patch": {k: v for k, v in patch.items()
                                                                          if k not in params}})
        queued += 1
    emit(Log(JOB, f"queued {queued} trial(s) from {run_dir}: its preset and {len(tips)} tip(s)"))
    return queued


def enqueue_listed(study, base: Preset, space: SearchSpace, emit: Emit) -> int:
    """Queue the space's [[trials]] not yet in the study (by label); how many were queued."""
    labels = {t.user_attrs.get("label") for t in study.get_trials(deepcopy=False)}
    queued = 0
    for listed in space.listed:
        if listed.label in labels:
            continue
        params = {param.key: listed.values.get(param.key, base.get(param.key)) for param in space.params}
        study.enqueue_trial(params, user_attrs={"label": listed.label, "patch": {
            k: v for k, v in listed.values.items() if k not in params}})
        queued += 1
    if space.listed:
        emit(Log(JOB, f"queued {queued} listed trial(s) of {space.source} "
                      f"({len(space.listed) - queued} already in the study)"))
    return queued


def _enqueue_best_tips(study, space: SearchSpace, emit: Emit) -> None:
    """The tips of the best trial so far, queued like the first run's (each once)."""
    for best in study.best_trials:                       # one best, or the Pareto front of two objectives
        if best.user_attrs.get("run_dir"):
            enqueue_tips(study, Path(best.user_attrs["run_dir"]), space, emit, base=False)   # its values ran already


def _shown(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())


def _summary(study, base: Preset, opts: SweepOptions) -> dict[str, Any]:
    """The study's counts and its best trial; the best trial's preset saved as PRESET-best-STUDY."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    summary: dict[str, Any] = {"study": study.study_name, "trials": len(trials), **counts}
    if counts["complete"] and opts.objective2:
        summary["pareto_trials"] = ", ".join(str(t.number) for t in study.best_trials)
    elif counts["complete"]:
        best = study.best_trial
        name = f"{base.name}-best-{study.study_name}".replace("_", "-")
        path = save(trial_preset_as(best, base, name), name, overwrite=True)
        summary.update(best_trial=best.number, best_value=best.value, best_run=best.user_attrs.get("run_dir"),
                       best_preset=str(path), best_params=json.dumps(best.params))
    return summary


def trial_preset_as(trial, base: Preset, name: str) -> Preset:
    """The trial's exact preset (its values and a tip's patch) as a new preset ``name``."""
    run_dir = trial.user_attrs.get("run_dir")
    if not run_dir:
        raise WorkbenchError(f"trial {trial.number} has no run directory.")
    return preset_from_run(Path(run_dir), base, name)


def preset_from_run(run_dir: Path, base: Preset, name: str) -> Preset:
    """A trial run's preset as a new preset ``name``; the machine share a parallel sweep gave it
    (runtime.num_threads) goes back to the base's."""
    if not (run_dir / "preset.toml").is_file():
        raise WorkbenchError(f"{run_dir} holds no preset.toml: the trial's run directory is gone or damaged.")
    ran = load(run_dir / "preset.toml")
    return derive(ran.with_changes({"runtime.num_threads": base.runtime.num_threads}), name)


def importances(study) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator) once two trials completed; {} before (or with
    two objectives). Optuna's warnings (below a few trials they name its source files) are not shown."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {key: round(value, 3) for key, value in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError):
        return {}


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trial for `sweep show`: number, state, value, params, run dir, pruned epoch, error."""
    front = {t.number for t in study.best_trials}       # the best trial(s), or the Pareto front of two objectives
    return [{"number": t.number, "state": shown_state(t),
             "value": t.values if len(study.directions) > 1 and t.values else t.value, "params": t.params,
             "run_dir": t.user_attrs.get("run_dir"), "pruned_at_epoch": t.user_attrs.get("pruned_at_epoch"),
             "error": t.user_attrs.get("error"), "label": tried_label(t), "best": t.number in front}
            for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]


def shown_state(trial) -> str:
    """A trial's state as the runs table would say it: a RUNNING trial whose run is dead is ``dead``, a trial
    stopped by the user (failed in Optuna's terms, queued again) is ``stopped``."""
    state = trial.state.name.lower()
    if state == "running" and not _maybe_live(trial):
        return "dead"
    if state == "fail" and trial.user_attrs.get("stopped"):
        return "stopped"
    return state


def tried_label(trial) -> str | None:
    """What a trial tried: its label (listed trial or tip), a retry of which trial, or None (the sampler)."""
    label, retry = trial.user_attrs.get("label"), trial.user_attrs.get("retry_of")
    if retry is None:
        return label
    return f"retry of #{retry}" + (f": {label}" if label else "")


def load_study(preset: Preset, opts: SweepOptions, missing_hint: str = ""):
    import optuna

    study = opts.study or f"{preset.name}-sweep"
    where = opts.storage or sweeps_dir(preset.runtime.runs_dir)
    if not opts.storage and not journal_path(preset.runtime.runs_dir, study).is_file():
        raise WorkbenchError(f"no study {study!r} in {where}. " + (missing_hint or
                             "Start it with `vlr-workbench sweep --preset P --space FILE`."))
    try:
        return optuna.load_study(study_name=study, storage=storage_for(preset, opts, study))
    except KeyError:
        raise WorkbenchError(f"no study {study!r} in {where}. " + (missing_hint or
                             "Start it with `vlr-workbench sweep --preset P --space FILE`.")) from None
