"""The messages that carry a job's engine events to the UI thread.

Engine events arrive from the job's thread: ``message_for(event)`` wraps each in a message that
``App.post_message`` (thread-safe) delivers to the UI thread. Panels declare the messages they post
themselves (``PresetList.Chosen``, ``RunHistory.Opened``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine import events as ev


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


@dataclass
class JobEvents(Message):
    """Several events at once (what a followed run wrote since the last poll): one wake-up of the UI."""
    events: list[ev.Event]


_WRAPPERS: dict[type, type[Message]] = {ev.Progress: JobProgress, ev.Metrics: JobMetrics, ev.Log: JobLog,
                                        ev.Samples: JobSamples, ev.Finished: JobFinished, ev.Failed: JobFailed}


def message_for(event: ev.Event) -> Message:
    """The message carrying an engine event to the UI thread."""
    return _WRAPPERS[type(event)](event)
