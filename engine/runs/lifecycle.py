"""One run directory's life, the same for trainers and the pipeline: its lock (one live process per run
directory), its ``status.json`` heartbeat, its stop requests (the front end's flag or a ``stop.request``
file from any terminal), and its end as finished, stopped or failed, with the lock released on every
path. Under torchrun only rank 0 (``main``) writes the status; every rank sees the same stop flag.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from engine.errors import JobStopped
from engine.runs.status import FileStop, RunLock, StatusWriter


class RunLifecycle:
    def __init__(self, path: Path, job: str, stop, *, main: bool = True, world_size: int = 1,
                 lock: RunLock | None = None) -> None:
        self.path, self.main = Path(path), main
        self.lock = lock or RunLock(self.path)           # rank 0 holds it
        self.stop = FileStop(stop, self.path) if main else stop
        self.status = StatusWriter(self.path, job, world_size=world_size, enabled=main)

    def end(self, state: str, message: str = "") -> None:
        """The status's last word (``finished``, ``stopped`` or ``failed``); the lock is released whatever
        happens to the write (the disk that failed a job may refuse the status too)."""
        try:
            if self.main:
                self.status.end(state, message)
        finally:
            self.lock.release()

    def failed(self, message: str) -> None:
        with contextlib.suppress(Exception):   # the error itself still reaches the user; the lock is released
            self.end("failed", message)

    @contextlib.contextmanager
    def lifetime(self) -> Iterator["RunLifecycle"]:
        """A stop ends the status as ``stopped`` (unless the job ended it already), any error as ``failed``;
        the directory is freed either way."""
        try:
            yield self
        except JobStopped:
            if self.status.fields["state"] == "running":
                self.end("stopped")
            else:
                self.lock.release()
            raise
        except BaseException as exc:
            self.failed(str(exc) or type(exc).__name__)
            raise
