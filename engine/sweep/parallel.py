"""``sweep --parallel K``: K trials at once on one machine, each an ordinary CLI job in its own process.

The controller asks the study for a trial, writes the trial's run directory (preset.toml,
sweep.json) and starts the job there (``engine.jobs.process.start_detached``) with its share of the
machine: on CUDA ``gpus_per_trial`` devices of its own (``CUDA_VISIBLE_DEVICES``; more than one runs
the trial under torchrun), on the CPU ``cores // K`` threads (``runtime.num_threads`` and
``OMP_NUM_THREADS``), so K trials do not oversubscribe the cores. It follows every trial from its run
directory (``RunFollower``): each epoch's val metric goes to the pruner, whose verdict is the run's
stop request; the run's end is told to the study. A stop (Ctrl-C) asks every running trial to stop
(each saves its checkpoint) and queues their values for the resume. A study storage that stays away longer
than ``--storage-wait`` (StorageLost) stops every running trial the same way, waits for them to save, and
ends the sweep with the storage's message: the same command resumes them once the server answers.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from engine.errors import StudyStorageLost as StorageLost
from engine.events import Emit, Failed, Finished, Log, Metrics
from engine.jobs.options import SweepOptions
from engine.jobs.process import DetachedJob, start_detached
from engine.jobs.registry import StopFlag
from engine.runs.follow import RunFollower
from engine.runs.status import request_stop, run_state

POLL_SECONDS = 1.0
STOP_WAIT_S = 600.0       # how long a lost storage's controller waits for its stopped trials to save and exit


@dataclass
class Slot:
    """One share of the machine: the variables a trial's process gets, and its thread count."""
    env: dict[str, str]
    threads: int = 0
    nproc: int = 1


def machine_slots(parallel: int, gpus_per_trial: int) -> list[Slot]:
    """``parallel`` shares: disjoint GPU sets on CUDA (an error when there are too few), else the cores divided."""
    import torch

    if torch.cuda.is_available():
        from engine.errors import WorkbenchError

        count = torch.cuda.device_count()
        if parallel * gpus_per_trial > count:
            raise WorkbenchError(f"--parallel {parallel} x --gpus-per-trial {gpus_per_trial} needs "
                                 f"{parallel * gpus_per_trial} GPUs; this machine has {count}.")
        return [Slot({"CUDA_VISIBLE_DEVICES": ",".join(str(i * gpus_per_trial + g) for g in range(gpus_per_trial))},
                     nproc=gpus_per_trial) for i in range(parallel)]
    threads = max(1, (os.cpu_count() or 1) // parallel)
    return [Slot({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}, threads) for _ in range(parallel)]


@dataclass
class LiveTrial:
    trial: Any
    job: DetachedJob
    follower: RunFollower
    slot: Slot
    changes: dict[str, Any]
    metric: str | None
    pruned_at: int | None = None
    ended: Finished | Failed | None = field(default=None)

    def poll(self) -> None:
        """Read the run's news: report val metrics to the pruner (stop the run if it says so); note the end."""
        for event in self.follower.poll():
            if (isinstance(event, Metrics) and event.split == "val" and self.metric in event.values
                    and self.pruned_at is None):
                self.trial.report(float(event.values[self.metric]), event.epoch)
                if self.trial.should_prune():
                    self.pruned_at = event.epoch
                    request_stop(self.job.run_dir)
            elif isinstance(event, (Finished, Failed)):
                self.ended = event
        if self.ended is None and self.job.proc.poll() is not None:
            for event in self.follower.poll():
                if isinstance(event, (Finished, Failed)):
                    self.ended = event
            if self.ended is None:
                self.ended = Failed(self.job.kind, f"the trial's process exited with code {self.job.proc.returncode} "
                                                   f"without ending its run; its output: {self.job.output}")


def run_parallel(study, opts: SweepOptions, emit: Emit, stop: StopFlag, start_trial, finish_trial,
                 claimed) -> None:
    """Keep ``opts.parallel`` trials running until the budget is met or a stop; ``start_trial(study, slot)``
    returns a LiveTrial (None: the budget was taken meanwhile), ``finish_trial(study, live)`` tells the study
    its end, ``claimed(study)`` counts the trials finished or running anywhere."""
    running: list[LiveTrial] = []
    try:
        _keep_running(running, study, opts, emit, stop, start_trial, finish_trial, claimed)
    except StorageLost as lost:
        raise StorageLost(f"{lost}; {_stop_and_wait(running, emit)}") from None


def _stop_and_wait(running: list[LiveTrial], emit: Emit) -> str:
    """Stop every running trial (each saves its checkpoint) and wait for their processes; what became of them."""
    if not running:
        return "no trial was running"
    emit(Log("sweep", f"the study's storage is lost: stopping {len(running)} running trial(s), each saves its "
                      "checkpoint", "warning"))
    for live in running:
        request_stop(live.job.run_dir)
    deadline = time.monotonic() + STOP_WAIT_S           # one wait for them all
    for live in running:
        try:
            live.job.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:      # said below: "still stopping"
            pass
    return "; ".join(f"run {live.job.run_dir} {_became(live)}" for live in running)


def _became(live: LiveTrial) -> str:
    if live.job.proc.poll() is None:
        return "is still stopping"
    state = run_state(live.job.run_dir)
    return {"finished": "ended before its result could be recorded", "stopped": "stopped with its checkpoint"}.get(
        state, f"ended {state} (see its output: {live.job.output})")


def _keep_running(running: list[LiveTrial], study, opts: SweepOptions, emit: Emit, stop: StopFlag, start_trial,
                  finish_trial, claimed) -> None:
    free = machine_slots(opts.parallel, opts.gpus_per_trial)
    stopping = False
    while True:
        while free and not stop.is_set() and claimed(study) < opts.trials:
            slot = free.pop()
            live = start_trial(study, slot)
            if live is None:                    # another worker took the last place of the budget
                free.append(slot)
                break
            running.append(live)
        if not running:
            return
        if getattr(stop, "user_stop", stop.is_set)() and not stopping:     # a user's stop, not the time budget
            stopping = True
            for live in running:
                request_stop(live.job.run_dir)
            emit(Log("sweep", f"stopping {len(running)} running trial(s): each saves its checkpoint"))
        for live in list(running):
            live.poll()
            if live.ended is not None:
                live.job.proc.wait()
                finish_trial(study, live)
                running.remove(live)
                free.append(live.slot)
        time.sleep(POLL_SECONDS)
