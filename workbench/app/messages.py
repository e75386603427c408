"""The messages of the app's one-way flow: preset -> job handle -> events -> panels.

Engine events arrive from the job's thread: ``message_for(event)`` wraps each in a message that
``post_message`` (thread-safe) delivers to the main screen, which hands them to its panels. The job
controller also announces a job's start and end and log lines; the messages that several tabs post
(open a run, attach to one) live here too. A panel's own messages are declared on the panel
(``PresetList.Chosen``, ``RunHistory.Compared``, ...). The job's news are posted to the main screen and do
not bubble on to the App.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from engine import events as ev


@dataclass
class JobProgress(Message, bubble=False):
    event: ev.Progress


@dataclass
class JobMetrics(Message, bubble=False):
    event: ev.Metrics


@dataclass
class JobLog(Message, bubble=False):
    event: ev.Log


@dataclass
class JobSamples(Message, bubble=False):
    event: ev.Samples


@dataclass
class JobFinished(Message, bubble=False):
    event: ev.Finished


@dataclass
class JobFailed(Message, bubble=False):
    event: ev.Failed


@dataclass
class JobEvents(Message, bubble=False):
    """Several events at once (what a followed run wrote since the last poll): one wake-up of the UI."""
    events: list[ev.Event]


@dataclass
class JobBegan(Message, bubble=False):
    """The controller shows a new job from now on (its panel, charts and tips start afresh)."""
    label: str
    detail: str
    announce: str
    charts: bool = True


@dataclass
class JobEnded(Message, bubble=False):
    """The job's worker has ended (finished, failed or let go); ``run_dir`` is where it wrote."""
    kind: str
    run_dir: Path | None


@dataclass
class JobStateChanged(Message, bubble=False):
    """The job's state changed without an event of its own: ``state`` is stopping or detached."""
    state: str
    detail: str = ""
    run: Path | None = None      # detached: the run let go of (the panel follows how it ends)


@dataclass
class LogLine(Message):
    """A line for the Log tab."""
    text: str
    style: str = ""


@dataclass
class RunOpened(Message):
    """Open a run directory: its curves on the charts, its evaluation in Results, its tips in Tips."""
    path: Path


@dataclass
class AttachRequested(Message):
    """Follow a running run (None: nothing was highlighted)."""
    path: Path | None


@dataclass
class ExportRequested(Message):
    """Export a finished pipeline or evaluate run to ONNX (into RUN/export)."""
    path: Path


_WRAPPERS: dict[type, type[Message]] = {ev.Progress: JobProgress, ev.Metrics: JobMetrics, ev.Log: JobLog,
                                        ev.Samples: JobSamples, ev.Finished: JobFinished, ev.Failed: JobFailed}


def message_for(event: ev.Event) -> Message:
    """The message carrying an engine event to the UI thread."""
    return _WRAPPERS[type(event)](event)


@dataclass
class RunFileWarning(Message, bubble=False):
    """A run file was damaged and partly left out (the first such warning of ``run``)."""
    run: str
    text: str
