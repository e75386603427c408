"""What the app follows while a job runs: one handle, two kinds (events in, stop out).

``ThreadJob`` runs a job in a thread of this process (``run_job`` with a ``StopFlag``).
``FollowedRun`` follows a run directory with ``RunFollower``: a run another process owns
(attach), or one this app started as its own process (``DetachedJob``: "own process" = spawn +
follow). Either way ``work(emit)`` runs in the app's thread worker and hands engine events to the
app until the job ends or the app lets go; ``request_stop`` asks the job to stop (it saves a
resumable checkpoint). The controller (``controllers.job_controller``) owns the one current handle and never asks
which kind it holds. No Textual here.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

from engine import events as ev
from engine.jobs.registry import JobRequest, StopFlag, job_spec, run_job
from engine.runs.follow import RunFollower
from engine.runs.status import read_status, request_stop

POLL_SECONDS = 2.0       # how often a followed run directory is read (each read wakes the UI once: a job beside
                         # the app on a small CPU machine pays for every wake-up)


class JobHandle(ABC):
    """A job the app shows. ``outlives_app``: it keeps running when the app closes or lets go."""

    outlives_app = False
    mode = ""                # shown beside the job's name: "" (in the app), "own process", "attached"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ended = threading.Event()     # set when ``work`` has returned (the job ended, or the app let go)

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.mode})" if self.mode else self.kind

    @property
    def run_dir(self) -> Path | None:
        return None

    def work(self, post: Callable[[Sequence[ev.Event]], None]) -> None:
        """In the worker thread: hand the job's events to ``post`` (a batch at a time: one wake-up of the UI
        each) until the job ends or the app lets go."""
        try:
            self._work(post)
        finally:
            self.ended.set()

    @abstractmethod
    def _work(self, post: Callable[[Sequence[ev.Event]], None]) -> None:
        """Run or follow the job, posting its events (each kind of handle does this its own way)."""

    @property
    @abstractmethod
    def stopping(self) -> bool:
        """Whether a stop was asked and the job has not ended yet."""

    @abstractmethod
    def request_stop(self) -> str:
        """Ask the job to stop; what was done, for the log (raises ``WorkbenchError``/``OSError``)."""

    @abstractmethod
    def let_go(self) -> None:
        """The app stops showing the job: a job of the app's thread is stopped, a followed run left running."""

    @abstractmethod
    def stop_question(self) -> str:
        """The question x asks before stopping this job."""

    def failure_text(self, error: BaseException) -> str:
        """The message for an error that escaped ``work`` (a bug, not the job's own failure)."""
        return f"{type(error).__name__}: {error}"

    def leave_running_note(self) -> str | None:
        """What the terminal says after the app closed leaving the job running (None: it does not outlive it)."""
        return None


class ThreadJob(JobHandle):
    """A job in a thread of the app: it stops when the app closes (after saving its checkpoint)."""

    def __init__(self, request: JobRequest) -> None:
        super().__init__(request.kind)
        self.request = request
        self.stop_flag = StopFlag()

    def _work(self, post: Callable[[Sequence[ev.Event]], None]) -> None:
        run_job(self.request, lambda event: post((event,)), self.stop_flag)

    @property
    def stopping(self) -> bool:
        return self.stop_flag.is_set()

    def request_stop(self) -> str:
        self.stop_flag.set()
        if job_spec(self.kind).resume_file is None:
            return "stop requested: the job ends after its current step and writes nothing"
        return "stop requested: the job saves a checkpoint and ends"

    def let_go(self) -> None:
        self.stop_flag.set()

    def stop_question(self) -> str:
        if job_spec(self.kind).resume_file is None:
            return f"Stop {self.kind}? It ends after the current step and writes nothing (it has no resume)."
        return f"Stop {self.kind}? It ends after the current step and saves a resumable checkpoint."


class FollowedRun(JobHandle):
    """A run directory followed every second; ``process`` is set when this app started the job's process."""

    outlives_app = True

    def __init__(self, kind: str, run_dir: Path, process=None) -> None:
        super().__init__(kind)
        self._run_dir = Path(run_dir)
        self.process = process                 # a DetachedJob, or None when attached to someone else's run
        self.mode = "own process" if process is not None else "attached"
        self.stop_sent = False
        self.detach = threading.Event()

    @property
    def run_dir(self) -> Path:
        return self._run_dir

    def _work(self, post: Callable[[Sequence[ev.Event]], None]) -> None:
        follower = RunFollower(self._run_dir)
        while True:
            news = follower.poll()
            if self.process is not None and not follower.ended and self.process.proc.poll() is not None:
                news += follower.poll()                  # its process is gone: did it end its run first?
                if not follower.ended:
                    news.append(ev.Failed(self.kind, self._exit_text()))
            if news:
                post(news)                               # what the run wrote since the last poll, at once
            if follower.ended or news and isinstance(news[-1], ev.Failed) or self.detach.wait(POLL_SECONDS):
                return

    def _exit_text(self) -> str:
        job = self.process
        tail = job.output_tail()
        return (f"{job.kind} (its own process, pid {job.proc.pid}) exited with code {job.proc.returncode} without "
                f"ending its run; its output ({job.output}): {tail or '(empty)'}")

    @property
    def stopping(self) -> bool:
        return self.stop_sent

    def request_stop(self) -> str:
        where = request_stop(self._run_dir)
        self.stop_sent = True
        return f"stop requested ({where}): the job saves last.pt and ends"

    def let_go(self) -> None:
        self.detach.set()

    def stop_question(self) -> str:
        return (f"Stop {self.kind}? It runs in its own process (pid {read_status(self._run_dir).get('pid')}): it "
                "ends after the current step and saves a resumable last.pt.")

    def failure_text(self, error: BaseException) -> str:
        return f"following the run failed: {type(error).__name__}: {error}"

    def leave_running_note(self) -> str | None:
        where = self._run_dir
        return (f"{self.kind} keeps running in {where}: `vlr-workbench attach {where}` follows it, "
                f"`vlr-workbench stop {where}` stops it")
