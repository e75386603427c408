"""The job panel: state, stage, progress bar, ETA, images/s and the running loss of the current job."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import ProgressBar, Static

from engine.events import Progress
from engine.runs.status import run_state

DETACHED_POLL_S = 5.0   # after D: how often the let-go run's state is read (until it ends)
PROGRESS_HZ = 4.0       # at most this often the panel shows the latest progress
STATE_STYLES = {"idle": "dim", "running": "bold green", "stopping": "bold yellow", "finished": "green",
                "stopped": "yellow", "failed": "bold red", "detached": "cyan", "dead": "red"}


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_fraction(event: Progress) -> float:
    """How far the current stage is, 0..1."""
    if event.epochs and event.steps:
        return min(1.0, ((max(event.epoch, 1) - 1) * event.steps + event.step) / (event.epochs * event.steps))
    return min(1.0, event.step / event.steps) if event.steps else 0.0


def unit(event: Progress) -> str:
    """Evaluation passes are passes, not epochs."""
    return "pass" if event.stage == "eval" else "epoch"


def stage_done(event: Progress) -> bool:
    return bool(event.steps) and event.step >= event.steps and (not event.epochs or event.epoch >= event.epochs)


def pipeline_part(event: Progress) -> str:
    """``stage 2/4 · `` of a pipeline's stage ('' outside a pipeline)."""
    return f"stage {event.part}/{event.parts} · " if event.parts else ""


def overall_eta(event: Progress) -> str:
    """`` · all ≈0:42:00``: a pipeline's whole remaining time (rough), '' outside a pipeline."""
    return f" · all ≈{format_eta(event.overall_eta_seconds)}" if event.parts and event.overall_eta_seconds else ""


def progress_text(event: Progress) -> str:
    where = f"{event.stage} · {unit(event)} {event.epoch}/{event.epochs} · step {event.step}/{event.steps}" \
        if event.epochs else f"{event.stage} · step {event.step}/{event.steps}"
    loss = f" · loss {event.loss:.4g}" if event.loss is not None else ""
    eta = "done" if stage_done(event) else f"ETA {format_eta(event.eta_seconds)}"
    return f"{pipeline_part(event)}{where}\n{eta}{overall_eta(event)} · {event.images_per_second:.1f} img/s{loss}"


class JobPanel(Vertical):
    BORDER_TITLE = "Job"

    class Changed(Message):
        """The panel shows new progress (the status line of narrow terminals follows it)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state = "idle"
        self.job = ""
        self.last: Progress | None = None
        self.layout_owed = False      # the detail changed while hidden, without a layout pass
        self.pending: Progress | None = None
        self._progress_timer = None   # the one-shot timer that shows ``pending``: armed by progress (at most
                                      # PROGRESS_HZ a second), so an app beside a running job wakes only for news

    def watch_detached(self, run_dir: Path) -> None:
        """After D: read the run's state every DETACHED_POLL_S until it ends (stopped from the CLI, finished,
        dead), then say so instead of "keeps running"."""
        def check() -> None:
            state = run_state(run_dir)
            if self.state != "detached" or state != "running":
                timer.stop()
            if self.state == "detached" and state != "running":
                self.set_state(state, detail=f"{run_dir.name} {state} after the app let go of it")
        timer = self.set_interval(DETACHED_POLL_S, check)

    def take_progress(self, event: Progress) -> None:
        """Keep the latest progress; shown on a one-shot timer (a job may report many steps a second)."""
        self.pending = event
        if self._progress_timer is None:
            self._progress_timer = self.set_timer(1 / PROGRESS_HZ, self.show_pending)

    def show_pending(self) -> None:
        """Show the kept progress now (the timer's end, a batch of a followed run's news, the job's end)."""
        if self._progress_timer is not None:
            self._progress_timer.stop()
            self._progress_timer = None
        if self.pending is not None:
            self.update_progress(self.pending)
            self.pending = None
            self.post_message(self.Changed())

    def compose(self) -> ComposeResult:
        yield Static("", id="job-state")
        yield ProgressBar(total=1.0, show_eta=False, id="job-progress")
        yield Static("no job yet: t train DSR · f fine-tune · e evaluate · p pipeline", id="job-detail")

    def on_mount(self) -> None:
        self._show_state()

    def set_state(self, state: str, job: str | None = None, detail: str | None = None) -> None:
        if state == "running" and job is not None:
            self.pending = None
        self.state = state
        if job is not None:
            self.job = job
        if state == "running" and job is not None:
            self.last = None
            self.query_one("#job-progress", ProgressBar).update(total=1.0, progress=0.0)
        if detail is not None:
            self.query_one("#job-detail", Static).update(detail)
        self._show_state()

    def _show_state(self) -> None:
        label = Text(self.state, style=STATE_STYLES.get(self.state, ""))
        if self.job:
            label.append(f"  {self.job}")
        self.query_one("#job-state", Static).update(label)

    def update_progress(self, event: Progress) -> None:
        self.last = event
        self.query_one("#job-progress", ProgressBar).update(total=1.0, progress=progress_fraction(event))
        detail = self.query_one("#job-detail", Static)
        size = detail.content_size
        detail.update(progress_text(event), layout=False)
        # a layout pass of the whole screen only when the detail's height changes: the progress lines are
        # redrawn a few times a second beside a job, and a layout pass is most of what that costs. Hidden (a
        # narrow terminal) it has no width to measure at: it is laid out when shown again (on_show)
        if size.width == 0:
            self.layout_owed = True
        elif detail.visual.get_height(detail.styles, size.width) != size.height:
            detail.refresh(layout=True)

    def on_show(self) -> None:
        if self.layout_owed:
            self.layout_owed = False
            self.query_one("#job-detail", Static).refresh(layout=True)

    def status_line(self) -> str:
        """One line for narrow terminals, where this panel is hidden."""
        text = f"{self.state} {self.job}".strip()
        if self.last is not None and self.state in ("running", "stopping"):
            event = self.last
            eta = "" if stage_done(event) else f" · ETA {format_eta(event.eta_seconds)}"
            text += f" · {pipeline_part(event)}{event.stage} {event.epoch}/{event.epochs} · " \
                    f"{progress_fraction(event):.0%}{eta}{overall_eta(event)} · {event.images_per_second:.1f} img/s"
        return text
