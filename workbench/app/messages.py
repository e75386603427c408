"""Every Textual message of the app, in one place.

Engine events arrive from the job's thread: ``message_for(event)`` wraps each in a message that
``App.post_message`` (thread-safe) delivers to the UI thread. The other messages go from panels to
the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from engine import events as ev
from engine.presets import Preset


@dataclass
class JobProgress(Message):
    event: ev.Progress


@dataclass
class JobMetrics(Message):
    event: ev.Metrics


@dataclass
class JobLog(Message):
    event: ev.Log


@dataclass
class JobSamples(Message):
    event: ev.Samples


@dataclass
class JobFinished(Message):
    event: ev.Finished


@dataclass
class JobFailed(Message):
    event: ev.Failed


_WRAPPERS: dict[type, type[Message]] = {ev.Progress: JobProgress, ev.Metrics: JobMetrics, ev.Log: JobLog,
                                        ev.Samples: JobSamples, ev.Finished: JobFinished, ev.Failed: JobFailed}


def message_for(event: ev.Event) -> Message:
    """The message carrying an engine event to the UI thread."""
    return _WRAPPERS[type(event)](event)


@dataclass
class PresetChosen(Message):
    """The user picked a preset in the list (by name)."""
    name: str


@dataclass
class PresetEdited(Message):
    """The editor produced a valid changed preset."""
    preset: Preset


@dataclass
class RunOpened(Message):
    """The user opened a past run directory in the run history."""
    path: Path


@dataclass
class RunsCompared(Message):
    """The user asked to overlay the curves of several past runs (``labels`` name them in legends)."""
    paths: list[Path]
    labels: list[str]


@dataclass
class TipChosen(Message):
    """The user asked to apply a tip to the current preset."""
    tip: Any


@dataclass
class AttachRequested(Message):
    """The user asked to follow a run another process owns (the Runs tab's highlighted run; None: no run)."""
    path: Path | None
