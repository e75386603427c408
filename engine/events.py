"""Events a job emits, shared by the CLI (rich progress) and the app (Textual messages).

They are small frozen dataclasses; a job calls ``emit(event)`` from its own thread, so a
consumer must be thread-safe (the app posts a message, the CLI updates a rich Progress).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union


@dataclass(frozen=True)
class Progress:
    """Where a job is: fired every few steps."""
    job: str                  # "train-dsr", "finetune", "evaluate", "pipeline", ...
    stage: str                # "dsr", "pretrain", "stage1", "stage2", "eval"
    epoch: int                # 1-based; 0 when not epoch-based
    epochs: int
    step: int                 # step within the epoch, 1-based
    steps: int                # steps per epoch
    images_per_second: float = 0.0
    eta_seconds: float | None = None
    loss: float | None = None
    part: int = 0                 # a pipeline's stage n of ``parts`` (0: not in a pipeline)
    parts: int = 0
    overall_eta_seconds: float | None = None   # a pipeline's whole remaining time (rough: see pipeline_progress)


@dataclass(frozen=True)
class Metrics:
    """Metric values of one split at one point; the same record goes to metrics.jsonl."""
    job: str
    stage: str
    epoch: int
    step: int                 # global optimiser step
    split: str                # "train" or "val" (or "test")
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Log:
    job: str
    message: str
    level: str = "info"       # "info", "warning", "error"


@dataclass(frozen=True)
class Samples:
    """A PNG strip (VLR | bicubic | SR | HR rows) written for an epoch."""
    job: str
    epoch: int
    path: Path


@dataclass(frozen=True)
class Finished:
    job: str
    run_dir: Path | None
    summary: dict = field(default_factory=dict)
    stopped: bool = False     # True when the stop flag ended the job early (a resumable checkpoint exists)
    resume_hint: str = ""     # stopped in a run the job waited on (its recogniser's pre-training): how to go on


@dataclass(frozen=True)
class Failed:
    job: str
    error: str                # one paragraph for the user
    traceback: str | None = None  # set for unexpected errors only


Event = Union[Progress, Metrics, Log, Samples, Finished, Failed]
Emit = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An ``Emit`` that drops every event."""
