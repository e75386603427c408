"""The one job of the app: start it (in the app's thread or its own process), attach to a run, stop, detach, and
see its worker end.

A plain object the App owns (``app.jobs``). ``handle`` is the one current ``JobHandle`` (None: no job); every
action acts on it whatever its kind. ``handle.work`` runs in a Textual thread worker (``exit_on_error=False``);
its events go to ``news`` (the main screen, which hands them to its panels) as messages, so data flow one way:
preset -> job handle -> events -> panels. The App's one ``Worker.StateChanged`` handler calls ``worker_changed``,
which opens the gate for the next job. In its own process (``engine.jobs.process``) a job outlives the app: the
app follows its run directory like an attached run and reaps the process when it ends.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Sequence

from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState

from engine import events as ev
from engine.errors import WorkbenchError
from engine.events import Event
from engine.jobs.process import OUTPUT_FILE, DetachedJob, start_detached
from engine.jobs.registry import JobRequest, app_jobs, own_process_jobs
from engine.presets import Preset
from engine.runs.follow import RunFollower
from engine.runs.status import read_status, run_state
from workbench.app import messages as msg
from workbench.app.job_handle import FollowedRun, JobHandle, ThreadJob
from workbench.app.job_plans import JobPlan, plan_job

REAP_SECONDS = 2.0       # while processes this app started live: how often their ends are collected (no zombies)
UNMOUNT_WAIT_S = 120.0   # how long a closing app waits for the stopped job to save its checkpoint


def not_running_reason(path: Path, state: str, job: str) -> str:
    """Why a run cannot be attached to, and what to do instead."""
    what = {"finished": "it has finished: Enter opens its curves and evaluation",
            "stopped": f"it was stopped: `vlr-workbench {job or 'JOB'} --resume {path}` continues it",
            "dead": f"its process is gone (killed or crashed): `vlr-workbench {job or 'JOB'} --resume {path}` "
                    "continues it",
            "failed": "it failed: Enter opens it, the Log and Tips tabs say why",
            "unknown": "it has no status.json (an older run, or one still starting): Enter opens it"}
    return f"{path.name} is not running, so there is nothing to attach to; {what.get(state, state)}."


class JobController:
    def __init__(self, app, detached: bool = True) -> None:
        self.app = app                          # runs the worker and the timers, shows the toasts
        self.news: MessagePump | None = None    # where the job's news go (the main screen sets itself)
        self.detached_start = detached          # t f p: the job in its own process (True) or the app's thread
        self.detached_jobs: list[DetachedJob] = []   # processes this app started (kept to reap them)
        self.handle: JobHandle | None = None
        self.worker: Worker | None = None
        self.last_kind = ""                     # the kind of the current or last job
        self.quit_when_idle = False
        self._reap_timer = None

    # ----------------------------------------------------------------- state
    @property
    def running(self) -> bool:
        return self.handle is not None

    @property
    def kind(self) -> str:
        return self.handle.kind if self.handle is not None else self.last_kind

    @property
    def following(self) -> bool:
        """Whether the current job is a run followed on disk (attached, or the app's own process)."""
        return self.handle is not None and self.handle.outlives_app

    @property
    def attached(self) -> Path | None:
        return self.handle.run_dir if self.following else None

    def why_not(self, action: str) -> str:
        """Why a job action cannot run now ('' when it can, or when ``action`` is not a job action)."""
        if action in (*app_jobs(), "attach") and self.following:
            return (f"attached to {self.kind}: D detaches (it keeps running) or x stops it" if action != "attach"
                    else f"already attached to {self.attached.name}: D detaches first")
        if action == "export" and self.following:
            return f"attached to {self.kind}: D detaches first (it keeps running)"
        if action in (*app_jobs(), "attach", "export") and self.running:
            return f"{self.kind} is running in the app: wait for it or stop it with x"
        if action == "detach" and not self.following:
            return "not attached to a run (a on the Runs tab attaches to a running one)"
        if action == "stop" and not self.running:
            return "no job is running"
        if action == "stop" and self.handle.stopping:
            return "the job is already stopping"
        return ""

    def hint(self) -> str:
        if self.following:
            return "attached: x stops it · D detaches · q leaves it running"
        return "x stops it" if self.running else ""

    # ----------------------------------------------------------------- start
    def start(self, key: str, preset: Preset, data: str | None, dirty: bool) -> None:
        plan = plan_job(key, preset)
        if self.detached_start and self._start_detached(plan, preset, data, dirty):
            return
        handle = ThreadJob(JobRequest(plan.kind, preset, data, plan.options))
        self._begin(handle, "starting…", f"▶ {plan.kind} with preset {preset.name}"
                    + (" (unsaved changes)" if dirty else ""), charts=plan.kind != "evaluate")
        if plan.note:
            self.say(plan.note, "dim")

    def run_in_app(self, request: JobRequest, announce: str) -> None:
        """Run ``request`` in the app's thread (a short job with no run to follow: export)."""
        self._begin(ThreadJob(request), "starting…", announce, charts=False)

    def _start_detached(self, plan: JobPlan, preset: Preset, data: str | None, dirty: bool) -> bool:
        """Start ``plan`` as a separate process and follow it; False when the job runs in the app instead."""
        if plan.kind not in own_process_jobs():
            self.say(f"{plan.kind} runs in the app (it is short and has no resume); own-process jobs are "
                     f"{', '.join(own_process_jobs())}", "dim")
            return False
        try:
            job = start_detached(plan.kind, preset, data, plan.options)
        except (WorkbenchError, OSError) as exc:
            self.app.notify(str(exc), title=f"{plan.kind} not started", severity="error", timeout=10)
            return True
        self.adopt(job)
        self.say(f"▶ {plan.kind} started in its own process with preset {preset.name}"
                 + (" (unsaved changes, written to its run)" if dirty else "")
                 + f": pid {job.proc.pid}, output {job.output}; it keeps running if the app closes", "bold")
        if plan.note:
            self.say(plan.note, "dim")
        handle = FollowedRun(plan.kind, job.run_dir, job)
        self._begin(handle, f"pid {job.proc.pid} in {job.run_dir.name}",
                    f"▶ pid {job.proc.pid} in {job.run_dir.name}: x stops it, D detaches (it keeps running), "
                    "q leaves it running")
        return True

    def attach(self, path: Path | None) -> None:
        """Follow the running run ``path`` (started anywhere); a toast says why when it cannot."""
        reason = "no run highlighted: pick a running run in the Runs tab, then a" if path is None else \
            self.why_not("attach")
        if reason:
            self.app.notify(reason, severity="warning")
            return
        try:
            RunFollower(path)                     # a run directory at all (preset.toml)
        except WorkbenchError as exc:
            self.app.notify(str(exc), title="cannot attach", severity="error", timeout=10)
            return
        state, status = run_state(path), read_status(path)
        job = status.get("job", "")
        if state != "running":
            self.app.notify(not_running_reason(path, state, job), title="cannot attach", severity="warning",
                            timeout=10)
            return
        detail = f"attached to {path.name} (pid {status.get('pid')} on {status.get('host')})"
        self._begin(FollowedRun(job or "job", path), detail,
                    f"▶ {detail}: x stops it, D detaches (it keeps running), q leaves it running")

    def reattach(self, rows) -> None:
        """When the app opens: follow again the newest running run started in its own process by an app (its
        ``detached.log``), so that the job panel shows the job that outlived the last session."""
        running = [row for row in rows if row.state == "running" and (row.path / OUTPUT_FILE).is_file()]
        if self.handle is None and running:
            newest = max(running, key=lambda row: row.started or 0.0)
            self.say(f"{newest.name} is running in its own process (started by an app before): following it "
                     "again", "bold")
            self.attach(newest.path)

    def _begin(self, handle: JobHandle, detail: str, announce: str, charts: bool = True) -> None:
        self.handle, self.last_kind = handle, handle.kind
        self.post(msg.JobBegan(handle.label, detail, announce, charts))
        self.worker = self.app.run_worker(partial(handle.work, self._post_events), name=handle.kind, group="job",
                                          thread=True, exit_on_error=False)

    def _post_events(self, events: Sequence[Event]) -> None:
        """Called in the job's thread: hand the events to the UI thread (one message: one wake-up)."""
        self.post(msg.message_for(events[0]) if len(events) == 1 else msg.JobEvents(list(events)))

    def post(self, message) -> None:
        if self.news is not None:
            self.news.post_message(message)

    def say(self, text: str, style: str = "") -> None:
        self.post(msg.LogLine(text, style))

    # ------------------------------------------------------------ stop, detach
    def request_stop(self) -> None:
        if self.handle is None or self.handle.stopping:
            return
        try:
            done = self.handle.request_stop()
        except (WorkbenchError, OSError) as exc:
            self.app.notify(f"could not ask {self.handle.kind} to stop: {exc}", severity="error", timeout=10)
            return
        self.post(msg.JobStateChanged("stopping"))
        self.say(done, "yellow")

    def detach(self) -> None:
        where = self.handle.run_dir
        self.handle.let_go()
        self.post(msg.JobStateChanged("detached", f"{where.name} keeps running; a on the Runs tab attaches again",
                                      where))
        self.say(f"detached from {where}: it keeps running (`vlr-workbench attach {where}` follows it, "
                 f"`vlr-workbench stop {where}` stops it)", "yellow")

    def toggle_detached(self) -> str:
        self.detached_start = not self.detached_start
        return ("own-process jobs: t f p start the job as its own process, which outlives the app (and a closed "
                "browser tab); the app follows it" if self.detached_start else
                "jobs inside the app: t f p run the job in the app's thread (it stops when the app closes, and "
                "shares the CPU with the interface); B switches back")

    def worker_changed(self, event: Worker.StateChanged) -> bool:
        """The one place that sees the job's worker end (errors included); True when the job has ended."""
        if event.worker is not self.worker or self.handle is None:
            return False
        if event.state == WorkerState.ERROR:
            self.post(msg.JobFailed(ev.Failed(self.handle.kind, self.handle.failure_text(event.worker.error))))
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return False
        handle, self.handle, self.worker = self.handle, None, None
        self.reap()
        self.post(msg.JobEnded(handle.kind, handle.run_dir))
        return True

    # ------------------------------------------------------- own processes
    def adopt(self, job: DetachedJob) -> None:
        """A process this app started (a job, a sweep): its end is collected every REAP_SECONDS."""
        self.detached_jobs.append(job)
        if self._reap_timer is None:
            self._reap_timer = self.app.set_interval(REAP_SECONDS, self.reap)

    def reap(self) -> list[DetachedJob]:
        """Collect the processes this app started that have ended (``poll`` waits for them: no zombie stays
        behind after D or a job's end); they leave ``detached_jobs``. The timer stops when none is left."""
        ended = [job for job in self.detached_jobs if job.proc.poll() is not None]
        self.detached_jobs[:] = [job for job in self.detached_jobs if job not in ended]
        followed = self.handle.process if self.following else None
        for job in ended:
            if job is not followed:      # a followed job's end is told by its run
                code = job.proc.returncode
                last = job.output_tail().splitlines()[-1:] if code else []
                self.say(f"{job.kind} (pid {job.proc.pid}, {job.run_dir.name}) exited with code {code}"
                         + (f": {last[0]} (all of its output: {job.output})" if last else ""), "red" if code else "dim")
        if not self.detached_jobs and self._reap_timer is not None:
            self._reap_timer.stop()
            self._reap_timer = None
        return ended

    # ------------------------------------------------------------------- quit
    def leaving_question(self) -> str:
        """What quitting leaves running ('' when nothing of the app's outlives it)."""
        own = self.handle.process if self.following else None
        if own is not None:
            return (f"{self.kind} runs in its own process (pid {own.proc.pid}) and keeps running after the app "
                    "closes" + (" until it has stopped." if self.handle.stopping else " (n, then x stops it first)."))
        return f"{self.kind} keeps running: it is not the app's." if self.following else ""

    def let_go(self) -> str | None:
        """Stop showing the job (quit): what the terminal should say about a job that keeps running."""
        if self.handle is None:
            return None
        note = self.handle.leave_running_note()
        self.handle.let_go()
        return note

    async def wait_on_unmount(self) -> None:
        """However the app ends, the job is let go: a job of the app's thread gets its stop flag and is waited
        for (up to ``UNMOUNT_WAIT_S``) while it saves a resumable checkpoint; a followed run is only left."""
        handle = self.handle
        if handle is None:
            return
        handle.let_go()
        if handle.outlives_app:
            return
        deadline = time.monotonic() + UNMOUNT_WAIT_S
        while not handle.ended.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
