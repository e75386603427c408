"""Attach the app to a run that another process owns, and start jobs detached.

``a`` on the Runs tab follows the highlighted running run (started headless, under torchrun, by
another app, or detached by this one) with ``engine.runs.follow.RunFollower`` in a thread worker that
polls every second; its events take the message path of an app job, so progress, charts and log
fill the same way. While attached, ``x`` writes the run's stop request (the job saves last.pt and
ends as stopped), ``D`` detaches, and quitting leaves the job running. t / f / p start the job as a
separate process (``detached_launch``) and attach to it, unless ``B`` switched to jobs inside the app:
in its own process a job outlives the app.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import work
from textual.widgets import TabbedContent

from engine import events as ev
from engine.errors import WorkbenchError
from engine.jobs.registry import own_process_jobs
from engine.runs.follow import RunFollower
from engine.runs.status import read_status, request_stop, run_state
from workbench.app import messages as msg
from workbench.app.detached_launch import DetachedJob, start_detached
from workbench.app.job_plans import JobPlan
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.run_history import RunHistory

POLL_SECONDS = 1.0
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
    """Mixed into ``WorkbenchApp`` beside ``JobControl`` (which routes stop, quit and worker ends here)."""

    attached: Path | None = None            # the run being followed (None: none)
    follow_detach: threading.Event | None = None   # set to stop following (the job keeps running)
    attach_stop_sent = False
    detached_start = True                   # t / f / p start a separate process (B toggles)
    followed_job: DetachedJob | None = None  # the process being followed, when this app started it
    _reap_timer = None                       # runs only while detached_jobs has processes

    @property
    def following(self) -> bool:
        return self.follow_detach is not None

    # ----------------------------------------------------------------- attach
    def action_attach(self) -> None:
        """Attach to the Runs tab's highlighted run (the command palette's way to the Runs tab's a)."""
        self.on_attach_requested(msg.AttachRequested(self.main_widget(RunHistory).highlighted))

    def on_attach_requested(self, message: msg.AttachRequested) -> None:
        path = message.path
        if path is None:
            self.notify("no run highlighted: pick a running run in the Runs tab, then a", severity="warning")
            return
        if self.following:
            where = self.attached.name
            self.notify(f"already attached to {where}: D detaches first", severity="warning")
            return
        if self.job_running:
            self.notify(f"{self.job_kind} is running in the app: wait for it or stop it with x", severity="warning")
            return
        try:
            RunFollower(path)                     # a run directory at all (preset.toml)
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot attach", severity="error", timeout=10)
            return
        state, job = run_state(path), read_status(path).get("job", "")
        if state != "running":
            self.notify(not_running_reason(path, state, job), title="cannot attach", severity="warning", timeout=10)
            return
        status = read_status(path)
        self._begin_following(job or "job", path, None,
                              f"attached to {path.name} (pid {status.get('pid')} on {status.get('host')})")

    def _begin_following(self, kind: str, run_dir: Path, job: DetachedJob | None, detail: str) -> None:
        self.pending_progress = None
        self.job_running, self.job_kind = True, kind
        self.attached, self.attach_stop_sent = run_dir, False
        self.followed_job = job
        self.follow_detach = threading.Event()
        self.buffers.clear()
        self.records.clear()
        self.tips_run = None
        self.main_widget(JobPanel).set_state("running", f"{kind} ({'own process' if job else 'attached'})", detail)
        self._log(f"▶ {detail}: x stops it, D detaches (it keeps running), q leaves it running", "bold")
        self.main_widget(TabbedContent).active = "tab-charts"
        self.main_widget(RunHistory).reload(self.preset.runtime.runs_dir)
        self._follow_run(run_dir, job, self.follow_detach)
        self._refresh_state()

    @work(thread=True, exit_on_error=False, group="attach", name="attach")
    def _follow_run(self, run_dir: Path, job: DetachedJob | None, detach: threading.Event) -> None:
        """In a thread: poll the run every second until it ends (or its process is gone, or the app detaches)."""
        follower = RunFollower(run_dir)
        while True:
            for event in follower.poll():
                self._emit(event)
            if follower.ended:
                return
            if job is not None and job.proc.poll() is not None:     # reaped: gone without ending its run?
                for event in follower.poll():
                    self._emit(event)
                if not follower.ended:
                    self._emit(ev.Failed(job.kind, self._exit_text(job)))
                return
            if detach.wait(POLL_SECONDS):
                return

    @staticmethod
    def _exit_text(job: DetachedJob) -> str:
        tail = job.output_tail()
        return (f"{job.kind} (its own process, pid {job.proc.pid}) exited with code {job.proc.returncode} without "
                f"ending its run; its output ({job.output}): {tail or '(empty)'}")

    # ------------------------------------------------------- stop and detach
    def stop_attached(self) -> None:
        """Ask the followed run's own process to stop (stop.request): it saves last.pt and ends as stopped."""
        try:
            where = request_stop(self.attached)
        except (WorkbenchError, OSError) as exc:
            self.notify(f"could not write the stop request in {self.attached}: {exc}", severity="error", timeout=10)
            return
        self.attach_stop_sent = True
        self.main_widget(JobPanel).set_state("stopping")
        self._log(f"stop requested ({where}): the job saves last.pt and ends", "yellow")
        self._refresh_state()

    def action_detach(self) -> None:
        if not self.following:
            self.notify("not attached to a run (a on the Runs tab attaches)", severity="warning")
            return
        where = self.attached
        self.follow_detach.set()
        self.main_widget(JobPanel).set_state("detached", detail=f"{where.name} keeps running; a on the "
                                                                 "Runs tab attaches again")
        self._log(f"detached from {where}: it keeps running (`vlr-workbench attach {where}` follows it, "
                  f"`vlr-workbench stop {where}` stops it)", "yellow")

    def leave_running_note(self) -> str:
        where = self.attached
        return (f"{self.job_kind} keeps running in {where}: `vlr-workbench attach {where}` follows it, "
                f"`vlr-workbench stop {where}` stops it")

    def attach_ended(self) -> None:
        """The follower's thread has ended (the run ended, or the app detached)."""
        self.job_running = False
        self.follow_detach = None
        self.attached = None
        self.followed_job = None
        self.attach_stop_sent = False
        self.reap_detached()
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
        """Start ``plan`` as a separate process and attach to it; False when the job runs in the app instead."""
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
        if self._reap_timer is None:
            self._reap_timer = self.set_interval(REAP_SECONDS, self.reap_detached)
        self._log(f"▶ {plan.kind} started in its own process with preset {self.preset.name}"
                  + (" (unsaved changes, written to its run)" if self.dirty else "")
                  + f": pid {job.proc.pid}, output {job.output}; it keeps running if the app closes", "bold")
        if plan.note:
            self._log(plan.note, "dim")
        self._begin_following(plan.kind, job.run_dir, job,
                              f"pid {job.proc.pid} in {job.run_dir.name}")
        return True

    def reap_detached(self) -> list[DetachedJob]:
        """Collect the processes this app started that have ended (``poll`` waits for them: no zombie stays
        behind after D or a job's end); they leave ``detached_jobs``. The timer stops when none is left."""
        ended = [job for job in self.detached_jobs if job.proc.poll() is not None]
        self.detached_jobs[:] = [job for job in self.detached_jobs if job not in ended]
        for job in ended:
            if job is not self.followed_job:      # a followed job's end is told by its run
                self._log(f"{job.kind} (pid {job.proc.pid}, {job.run_dir.name}) exited with code "
                          f"{job.proc.returncode}", "dim")
        if not self.detached_jobs and self._reap_timer is not None:
            self._reap_timer.stop()
            self._reap_timer = None
        return ended
