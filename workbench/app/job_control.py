"""Job control for the app: start a job in a thread worker, show its events, stop it, quit safely.

``run_job`` runs in a Textual thread worker (``exit_on_error=False``); its events come back as
messages (``workbench.app.messages``), progress is shown on a timer, and one ``Worker.StateChanged``
handler sees the worker end (errors included) and re-enables the job keys. Stopping is
cooperative through the job's ``StopFlag``; a new job can start only once the old thread has ended.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial, wraps
from pathlib import Path
from typing import Sequence

from textual.widgets import TabbedContent
from textual.worker import Worker, WorkerState

from engine.errors import WorkbenchError
from engine import events as ev
from engine.events import Event, Progress
from engine.jobs.registry import JobRequest
from workbench.app import messages as msg
from workbench.app.job_handle import JobHandle, ThreadJob
from workbench.app.job_plans import plan_job
from workbench.app.metric_buffers import LIVE_SPLIT
from workbench.app.widgets.charts import ChartsPanel
from workbench.app.widgets.dialogs import ConfirmDialog
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.samples_view import SamplesScreen

EVENT_HANDLERS = {ev.Progress: "on_job_progress", ev.Metrics: "on_job_metrics", ev.Log: "on_job_log",
                  ev.Samples: "on_job_samples", ev.Finished: "on_job_finished", ev.Failed: "on_job_failed"}
ERROR_DETAIL_CHARS = 600   # the job panel shows this much of an error (cut at a word), the log all of it
PROGRESS_HZ = 4.0       # at most this often the job panel shows the latest progress
UNMOUNT_WAIT_S = 120.0  # how long a closing app waits for the stopped job to save its checkpoint


def shown_on_main_screen(handler):
    """A handler of a job's news that draws on the main screen: skipped once that screen's widgets are gone (the
    app closing while the job's last messages arrive; the run directory keeps what they said)."""
    @wraps(handler)
    def guarded(self, *args):
        if self.main_widget_ready():
            return handler(self, *args)
        return None
    return guarded


def error_detail(error: str) -> str:
    """The error's first paragraph for the job panel, cut at a word boundary when very long."""
    text = " ".join((error or "").strip().split("\n\n")[0].split())
    if len(text) <= ERROR_DETAIL_CHARS:
        return text
    return text[:ERROR_DETAIL_CHARS].rsplit(" ", 1)[0] + " … (full text in the Log tab)"


class JobControl:
    """Mixed into ``WorkbenchApp``; the app provides the widgets, ``_log``, ``_refresh_state``, ``why_disabled``.

    ``job`` is the one current handle (None: no job); stop, quit, detach and the worker's end act on it
    whatever its kind.
    """

    job: JobHandle | None = None
    job_worker: Worker | None = None
    last_kind = ""                # the kind of the current or last job (messages after its end name it)
    pending_progress: Progress | None = None
    _progress_timer = None    # the one-shot timer that shows pending_progress: armed by progress (at most
                              # PROGRESS_HZ a second), so an app beside a running job wakes only when there is news
    quit_when_idle = False

    @property
    def job_running(self) -> bool:
        return self.job is not None

    @property
    def job_kind(self) -> str:
        return self.job.kind if self.job is not None else self.last_kind

    @property
    def following(self) -> bool:
        """Whether the current job is a run followed on disk (attached, or the app's own process)."""
        return self.job is not None and self.job.outlives_app

    @property
    def attached(self) -> Path | None:
        return self.job.run_dir if self.following else None

    def action_train(self) -> None:
        self._start_job("train")

    def action_finetune(self) -> None:
        self._start_job("finetune")

    def action_evaluate(self) -> None:
        self._start_job("evaluate")

    def action_pipeline(self) -> None:
        self._start_job("pipeline")

    def _start_job(self, key: str) -> None:
        if self.job_running:
            self.notify(self.why_disabled(key), severity="warning")
            return
        plan = plan_job(key, self.preset)
        if self.detached_start and self.start_detached_job(plan):
            return
        handle = ThreadJob(JobRequest(plan.kind, self.preset, self.data, plan.options))
        self.begin_job(handle, "starting…", f"▶ {plan.kind} with preset {self.preset.name}"
                       + (" (unsaved changes)" if self.dirty else ""), charts=plan.kind != "evaluate")
        if plan.note:
            self._log(plan.note, "dim")

    def begin_job(self, handle: JobHandle, detail: str, announce: str, charts: bool = True) -> None:
        """Show ``handle``'s job from now on: its events fill the job panel, charts, log and tips."""
        self.job, self.last_kind = handle, handle.kind
        self.pending_progress = None
        self.buffers.clear()
        self.main_widget(ChartsPanel).flush()      # the last job's curves go at once
        self.records.clear()
        self.tips_run = None       # the Tips tab follows the new job
        self.main_widget(JobPanel).set_state("running", handle.label, detail)
        self._log(announce, "bold")
        if charts:
            self.main_widget(TabbedContent).active = "tab-charts"
        self.job_worker = self.run_worker(partial(handle.work, self._post), name=handle.kind, group="job",
                                          thread=True, exit_on_error=False)
        self._refresh_state()

    def _post(self, events: Sequence[Event]) -> None:
        """Called in the job's thread: hand the events to the UI thread (one message: one wake-up)."""
        self.post_message(msg.message_for(events[0]) if len(events) == 1 else msg.JobEvents(list(events)))

    @shown_on_main_screen
    def on_job_events(self, message: msg.JobEvents) -> None:
        """A followed run's news since the last poll: each event handled as if alone, the progress shown
        once at the end (no timer: the batch is already at most one a second)."""
        for event in message.events:
            getattr(self, EVENT_HANDLERS[type(event)])(msg.message_for(event))
        if self._progress_timer is not None:
            self._progress_timer.stop()
            self._show_pending_progress()

    def action_stop(self) -> None:
        self.push_screen(ConfirmDialog(self.job.stop_question(), "Stop"), self._stop_confirmed)

    def _stop_confirmed(self, yes: bool | None) -> None:
        if yes:
            self._request_stop()

    def _request_stop(self) -> None:
        if self.job is None or self.job.stopping:
            return
        try:
            done = self.job.request_stop()
        except (WorkbenchError, OSError) as exc:
            self.notify(f"could not ask {self.job.kind} to stop: {exc}", severity="error", timeout=10)
            return
        self.main_widget(JobPanel).set_state("stopping")
        self._log(done, "yellow")
        self._refresh_state()

    def action_detach(self) -> None:
        where = self.job.run_dir
        self.job.let_go()
        self.main_widget(JobPanel).set_state("detached", detail=f"{where.name} keeps running; a on the "
                                                                 "Runs tab attaches again")
        self._log(f"detached from {where}: it keeps running (`vlr-workbench attach {where}` follows it, "
                  f"`vlr-workbench stop {where}` stops it)", "yellow")

    @shown_on_main_screen
    def on_job_progress(self, message: msg.JobProgress) -> None:
        """Keep the latest progress; the panel shows it on a timer (a job may report many steps a second)."""
        event = message.event
        self.pending_progress = event
        if self._progress_timer is None:
            self._progress_timer = self.set_timer(1 / PROGRESS_HZ, self._show_pending_progress)
        if event.loss is not None and event.steps:
            self.buffers.add(event.stage, LIVE_SPLIT, max(event.epoch, 1) - 1 + event.step / event.steps,
                             {"loss": event.loss})
            self.main_widget(ChartsPanel).changed()

    @shown_on_main_screen
    def on_job_metrics(self, message: msg.JobMetrics) -> None:
        event = message.event
        self.buffers.add(event.stage, event.split, event.epoch, event.values)
        self.main_widget(ChartsPanel).changed()
        self.records.append({"job": event.job, "stage": event.stage, "epoch": event.epoch, "step": event.step,
                             "split": event.split, **event.values})
        if event.split != "train":
            shown = "  ".join(f"{k} {v:.4g}" for k, v in event.values.items() if isinstance(v, (int, float)))
            self._log(f"{event.stage} epoch {event.epoch} {event.split}: {shown}", "cyan")

    @shown_on_main_screen
    def on_job_log(self, message: msg.JobLog) -> None:
        event = message.event
        self._log(f"[{event.job}] {event.message}", {"warning": "yellow", "error": "red"}.get(event.level, ""))

    @shown_on_main_screen
    def on_job_samples(self, message: msg.JobSamples) -> None:
        self._log(f"samples of epoch {message.event.epoch}: {message.event.path}", "dim")
        if isinstance(self.screen, SamplesScreen) and Path(message.event.path).parent.parent == self.screen.run_dir:
            self.screen.reload()

    @shown_on_main_screen
    def on_job_finished(self, message: msg.JobFinished) -> None:
        self._show_pending_progress()
        self.main_widget(ChartsPanel).flush()      # the final curves at once
        event = message.event
        state = "stopped" if event.stopped else "finished"
        summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in event.summary.items() if not isinstance(v, (dict, list)))
        self.main_widget(JobPanel).set_state(state, detail=(f"run: {event.run_dir.name}" if event.run_dir else ""))
        self._log(f"■ {event.job} {state}" + (f": {summary}" if summary else ""), "bold green")
        if event.stopped:
            where = event.run_dir / "last.pt" if event.run_dir else "its run directory"
            self._log(f"resumable checkpoint: {where}", "yellow")
        if event.run_dir is not None:
            self.main_widget(RunHistory).reload(self.preset.runtime.runs_dir)
            # a pipeline links the eval.json of its evaluate stage from its summary
            eval_json = event.summary.get("eval_json")
            self._show_evaluation(Path(eval_json).parent if eval_json else Path(event.run_dir))
        if event.stopped:
            where = event.run_dir / "last.pt" if event.run_dir else None
            self.notify(f"{event.job} stopped: resumable checkpoint {where}" if where and where.exists() else
                        f"{event.job} stopped" + (f" (run {event.run_dir})" if event.run_dir else ""),
                        severity="warning", timeout=10)
        else:
            self.notify(f"{event.job} finished")
        self._update_tips()

    @shown_on_main_screen
    def on_job_failed(self, message: msg.JobFailed) -> None:
        self._show_pending_progress()
        self.main_widget(ChartsPanel).flush()
        self._show_failure(message.event.job, message.event.error, message.event.traceback)
        self._update_tips()     # a diverged run's metrics call for tips too

    def _show_failure(self, job: str, error: str, trace: str | None = None) -> None:
        self.main_widget(JobPanel).set_state("failed", detail=error_detail(error))
        self._log(f"✗ {job} failed: {error}", "bold red")
        if trace:
            self._log(trace, "dim")
        self.notify(error, title=f"{job} failed", severity="error", timeout=15)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place that sees the job's worker end (errors included) and opens the gate for the next job."""
        if event.worker is not self.job_worker or self.job is None:
            return
        shown = self.main_widget_ready()          # not while the app closes: the state is cleared all the same
        if event.state == WorkerState.ERROR and shown:
            self._show_failure(self.job.kind, self.job.failure_text(event.worker.error))
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            handle, self.job, self.job_worker = self.job, None, None
            self.reap_detached()
            if handle.run_dir is not None and shown:
                self.main_widget(RunHistory).reload(self.preset.runtime.runs_dir)
            self._refresh_state()
            if self.quit_when_idle:
                self.exit(0)

    @shown_on_main_screen
    def _show_pending_progress(self) -> None:
        self._progress_timer = None
        if self.pending_progress is not None:
            self.main_widget(JobPanel).update_progress(self.pending_progress)
            self.pending_progress = None
            self._update_status()

    async def action_quit(self) -> None:
        if self.job is not None and not self.job.outlives_app:
            question = f"{self.job.kind} is running. Stop it (it saves a resumable checkpoint) and quit?"
            self.push_screen(ConfirmDialog(question, "Stop and quit"), self._quit_confirmed)
            return
        unsaved = sorted({*self.drafts, *([self.preset.name] if self.dirty else [])})
        own = self.job.process if self.following else None
        if not unsaved and own is None:
            self._exit_leaving_job()
            return
        parts = []
        if unsaved:
            parts.append(f"Unsaved changes to {', '.join(unsaved)} will be lost (n, then ctrl+s saves or a "
                         "saves as).")
        if own is not None:
            parts.append(f"{self.job.kind} runs in its own process (pid {own.proc.pid}) and keeps running after "
                         "the app closes" + (" until it has stopped." if self.job.stopping else
                                             " (n, then x stops it first)."))
        elif self.following:
            parts.append(f"{self.job.kind} keeps running: it is not the app's.")
        verb = "Quit without saving" if unsaved else "Quit, leave it running"
        self.push_screen(ConfirmDialog(" ".join(parts) + " Quit anyway?", verb),
                         lambda yes: self._exit_leaving_job() if yes else None)

    def _exit_leaving_job(self) -> None:
        """Quit; a followed run keeps running (said on the terminal after the app closes)."""
        note = self.job.leave_running_note() if self.job is not None else None
        if self.job is not None:
            self.job.let_go()
        self.exit(0, message=note)

    async def on_unmount(self) -> None:
        """However the app ends (ctrl+q, a closed browser tab, a test), the job is let go: a job of the app's
        thread gets its stop flag and is waited for (up to ``UNMOUNT_WAIT_S``) while it saves a resumable
        checkpoint; a followed run is only left (it is not the app's to stop)."""
        handle = self.job
        if handle is None:
            return
        handle.let_go()
        if handle.outlives_app:
            return
        deadline = time.monotonic() + UNMOUNT_WAIT_S
        while not handle.ended.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _quit_confirmed(self, yes: bool | None) -> None:
        if yes:
            self.quit_when_idle = True
            self._request_stop()
            self.notify("quitting once the job has saved its checkpoint")
