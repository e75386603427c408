"""Attach the app to a run that another process owns, and start jobs detached.

``a`` on the Runs tab follows the highlighted running run (started headless, under torchrun, by
another app, or detached by this one) as a ``FollowedRun`` handle (``job_handle``): the controller
shows it as it shows a job of the app's thread, so progress, charts and log fill the same way. While attached, ``x`` writes the run's stop request (the job saves last.pt and
ends as stopped), ``D`` detaches, and quitting leaves the job running. t / f / p start the job as a
separate process (``engine.jobs.process``) and attach to it, unless ``B`` switched to jobs inside the app:
in its own process a job outlives the app.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import WorkbenchError
from engine.jobs.registry import own_process_jobs
from engine.runs.follow import RunFollower
from engine.runs.status import read_status, run_state
from engine.jobs.process import DetachedJob, start_detached
from workbench.app.job_handle import FollowedRun
from workbench.app.job_plans import JobPlan
from workbench.app.widgets.run_history import RunHistory

REAP_SECONDS = 2.0       # while processes this app started live: how often their ends are collected (no zombies)


def not_running_reason(path: Path, state: str, job: str) -> str:
    """Why a run cannot be attached to, and what to do instead."""
    what = {"finished": "it has finished: Enter opens its curves and evaluation",
            "stopped": f"it was stopped: `vlr-workbench {job or 'JOB'} --resume {path}` continues it",
            "dead": f"its process is gone (killed or crashed): `vlr-workbench {job or 'JOB'} --resume {path}` "
                    "continues it",
            "failed": "it failed: Enter opens it, the Log and Tips tabs say why",
            "unknown": "it has no status.json (an older run, or one still starting): Enter opens it"}
    return f"{path.name} is not running, so there is nothing to attach to; {what.get(state, state)}."


class AttachControl:
    """Mixed into ``WorkbenchApp`` beside ``JobControl``: the ways to a ``FollowedRun`` (attach, own process)."""

    detached_start = True                   # t / f / p start a separate process (B toggles)
    _reap_timer = None                       # runs only while detached_jobs has processes

    # ----------------------------------------------------------------- attach
    def action_attach(self) -> None:
        """Attach to the Runs tab's highlighted run (the command palette's way to the Runs tab's a)."""
        self.attach(self.main_widget(RunHistory).highlighted)

    def on_run_history_attach_requested(self, message: RunHistory.AttachRequested) -> None:
        """``a`` on the Runs tab (a mixin's handler goes by its name: ``@on`` needs Textual's metaclass)."""
        self.attach(message.path)

    def attach(self, path: Path | None) -> None:
        if path is None:
            self.notify("no run highlighted: pick a running run in the Runs tab, then a", severity="warning")
            return
        if self.job_running:
            self.notify(self.why_disabled("attach"), severity="warning")
            return
        try:
            RunFollower(path)                     # a run directory at all (preset.toml)
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot attach", severity="error", timeout=10)
            return
        state, status = run_state(path), read_status(path)
        job = status.get("job", "")
        if state != "running":
            self.notify(not_running_reason(path, state, job), title="cannot attach", severity="warning", timeout=10)
            return
        self._follow(FollowedRun(job or "job", path), f"attached to {path.name} (pid {status.get('pid')} on "
                                                       f"{status.get('host')})")

    def _follow(self, handle: FollowedRun, detail: str) -> None:
        self.begin_job(handle, detail, f"▶ {detail}: x stops it, D detaches (it keeps running), q leaves it running")
        self.main_widget(RunHistory).reload(self.preset.runtime.runs_dir)

    # ------------------------------------------------------- detached start
    def action_toggle_detached(self) -> None:
        self.detached_start = not self.detached_start
        self.notify("own-process jobs: t f p start the job as its own process, which outlives the app (and a "
                    "closed browser tab); the app follows it" if self.detached_start else
                    "jobs inside the app: t f p run the job in the app's thread (it stops when the app closes, "
                    "and shares the CPU with the interface); B switches back")
        self._refresh_state()

    def start_detached_job(self, plan: JobPlan) -> bool:
        """Start ``plan`` as a separate process and follow it; False when the job runs in the app instead."""
        if plan.kind not in own_process_jobs():
            own = ", ".join(own_process_jobs())
            self._log(f"{plan.kind} runs in the app (it is short and has no resume); own-process jobs are {own}", "dim")
            return False
        try:
            job = start_detached(plan.kind, self.preset, self.data, plan.options)
        except (WorkbenchError, OSError) as exc:
            self.notify(str(exc), title=f"{plan.kind} not started", severity="error", timeout=10)
            return True
        self.detached_jobs.append(job)
        self.watch_processes()
        self._log(f"▶ {plan.kind} started in its own process with preset {self.preset.name}"
                  + (" (unsaved changes, written to its run)" if self.dirty else "")
                  + f": pid {job.proc.pid}, output {job.output}; it keeps running if the app closes", "bold")
        if plan.note:
            self._log(plan.note, "dim")
        self._follow(FollowedRun(plan.kind, job.run_dir, job), f"pid {job.proc.pid} in {job.run_dir.name}")
        return True

    def watch_processes(self) -> None:
        """Reap the processes this app started (``detached_jobs``) as they end."""
        if self._reap_timer is None:
            self._reap_timer = self.set_interval(REAP_SECONDS, self.reap_detached)

    def reap_detached(self) -> list[DetachedJob]:
        """Collect the processes this app started that have ended (``poll`` waits for them: no zombie stays
        behind after D or a job's end); they leave ``detached_jobs``. The timer stops when none is left."""
        ended = [job for job in self.detached_jobs if job.proc.poll() is not None]
        self.detached_jobs[:] = [job for job in self.detached_jobs if job not in ended]
        followed = self.job.process if self.following else None
        for job in ended:
            if job is not followed:      # a followed job's end is told by its run
                self._log(f"{job.kind} (pid {job.proc.pid}, {job.run_dir.name}) exited with code "
                          f"{job.proc.returncode}", "dim")
        if not self.detached_jobs and self._reap_timer is not None:
            self._reap_timer.stop()
            self._reap_timer = None
        return ended
