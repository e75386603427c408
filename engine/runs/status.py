"""A run directory's live status: ``status.json`` written by the process that owns the run.

``status.json`` = ``{"state", "pid", "host", "job", "stage", "epoch", "epochs", "step", "steps",
"heartbeat", "started", "world_size", "message"}``; ``state`` is ``running`` while the job lives and
``finished``, ``stopped`` or ``failed`` at its end. A reader turns a ``running`` status into
``dead`` (a SIGKILL, a crash, a lost node) when its process is gone (same host) or, for a run on
another host, when its heartbeat is older than ``STALE_SECONDS``.
Written atomically every few seconds by ``StatusWriter`` (rank 0 only under torchrun).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from engine.io import atomic
from engine.io.atomic import pid_alive
from engine.runs.records import read_owner, read_status, read_summary  # noqa: F401 - read_status re-exported

STATUS_FILE = "status.json"
STOP_FILE = "stop.request"        # created by a front end to stop a detached job cleanly
HEARTBEAT_SECONDS = 5.0           # the writer refreshes at least this often while a job runs
STALE_SECONDS = 30.0              # a heartbeat older than this may belong to a dead process
STATES = ("running", "finished", "stopped", "failed", "dead", "unknown")


def valid_pid(pid: Any) -> int | None:
    """A process id as written by us (a positive int), or None for anything else (edited, damaged)."""
    if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2 ** 31:
        return pid
    return None


def _seconds(value: Any) -> float:
    """A time stamp from a run file; anything unreadable counts as long ago."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return 0.0


def run_state(run_path: str | Path, now: float | None = None) -> str:
    """running, finished, stopped, failed, dead, or unknown (a run from before status.json)."""
    path = Path(run_path)
    status = read_status(path)
    state = status.get("state")
    if state == "running":
        pid = valid_pid(status.get("pid"))
        if pid is not None and status.get("host") == socket.gethostname():   # this host: the process itself says
            return "running" if pid_alive(pid) else "dead"
        # another host, or an unreadable pid: trust a fresh heartbeat only
        age = (now or time.time()) - _seconds(status.get("heartbeat"))
        return "dead" if age > STALE_SECONDS else "running"
    if state in STATES:
        return state
    if (path / "summary.json").is_file():  # runs written before status.json existed
        summary = read_summary(path)
        return ("stopped" if summary.get("stopped") else "finished") if summary else "unknown"
    return "unknown"


def stop_requested(run_path: str | Path) -> bool:
    return (Path(run_path) / STOP_FILE).exists()


class FileStop:
    """A StopFlag that is also set by a ``stop.request`` file in ``run_path`` (looked for at most once a
    second); a pipeline hands it to its stages, so stopping the pipeline's directory stops the stage."""

    def __init__(self, inner, run_path: str | Path) -> None:
        self.inner, self.run_path, self._polled = inner, Path(run_path), 0.0

    def set(self) -> None:
        self.inner.set()

    def is_set(self) -> bool:
        if not self.inner.is_set() and time.time() - self._polled >= 1.0:
            self._polled = time.time()
            if stop_requested(self.run_path):
                self.inner.set()
        return self.inner.is_set()

    def check(self) -> None:
        if self.is_set():
            from engine.errors import JobStopped

            raise JobStopped()


def request_stop(run_path: str | Path) -> Path:
    """Ask the job that owns ``run_path`` (any process, any front end) to stop at its next step."""
    path = Path(run_path) / STOP_FILE
    mark = f"{time.time()} {os.getpid()}\n"
    atomic.write_text(path, mark)
    # it ended meanwhile: take back this request (its writer's end removed any request made before that)
    if run_state(run_path) in ("finished", "stopped", "failed"):
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == mark:
                path.unlink()
    return path


class StatusWriter:
    """Keeps status.json current: ``update(...)`` is cheap (writes at most every few seconds), and a
    daemon thread refreshes the heartbeat meanwhile, so a long validation or a slow step never makes
    a live run look dead to another host."""

    def __init__(self, run_path: str | Path, job: str, *, world_size: int = 1, enabled: bool = True) -> None:
        self.path = Path(run_path) / STATUS_FILE
        self.enabled = enabled
        self.fields: dict[str, Any] = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                       "job": job, "stage": None, "epoch": 0, "epochs": None, "step": 0,
                                       "steps": None, "started": time.time(), "world_size": world_size,
                                       "message": ""}
        self._written = 0.0
        self._lock = threading.Lock()
        self._ended = threading.Event()
        if enabled:
            (Path(run_path) / STOP_FILE).unlink(missing_ok=True)  # an old request must not stop a new job
            self.write()
            threading.Thread(target=self._beat, name="status-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._ended.wait(HEARTBEAT_SECONDS):
            if time.time() - self._written >= HEARTBEAT_SECONDS:
                try:
                    self.write()
                except Exception:  # noqa: BLE001 - a full disk: the job itself reports it at its next write
                    pass

    def update(self, force: bool = False, **fields: Any) -> None:
        self.fields.update(fields)
        if force or time.time() - self._written >= HEARTBEAT_SECONDS:
            self.write()

    def write(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self._ended.is_set() and self.fields["state"] == "running":
                return   # the heartbeat thread never overwrites the final state
            self._written = time.time()
            atomic.write_json(self.path, {**self.fields, "heartbeat": self._written})

    def end(self, state: str, message: str = "") -> None:
        self.fields.update(state=state, message=message[:2000])
        self._ended.set()
        self.write()
        if self.enabled:   # a request that came too late to stop it must not stay behind (request_stop checks after)
            with contextlib.suppress(OSError):
                (self.path.parent / STOP_FILE).unlink(missing_ok=True)

    def hand_over(self) -> None:
        """Stop writing (the heartbeat included) without a final state: another writer of the run takes over."""
        self._ended.set()


LOCK_FILE = "owner.lock"


class RunLock:
    """One live process owns a run directory: ``owner.lock`` holds its pid and host.

    Taken with O_EXCL, so two jobs started together on one directory cannot both own it; a lock
    left by a dead process on this host (or a stale one from another host) is taken over. Taking
    over happens under an flock of the run directory: two processes that both judge the owner dead
    take turns, and the second finds the first's fresh lock.
    """

    def __init__(self, run_path: str | Path) -> None:
        self.path = Path(run_path) / LOCK_FILE
        self.held = False

    def acquire(self) -> str:
        """Take the lock; returns a note when a dead owner's lock was taken over, else ""."""
        if self._create():
            return ""
        with _flocked(self.path.parent):
            for _ in range(3):
                owner = self._owner()
                if self._owner_alive(owner):
                    raise self._in_use(owner)
                self.path.unlink(missing_ok=True)
                if self._create():
                    return (f"took over {self.path} from pid {owner.get('pid')} on {owner.get('host')}, "
                            "which is no longer running")
        from engine.errors import WorkbenchError

        raise WorkbenchError(f"could not take {self.path}: another job keeps creating it. Give another --run-dir.")

    def adopt(self) -> bool:
        """True (and held from now on) when this process already owns ``owner.lock`` (taken by another RunLock
        object of the same directory earlier in the job)."""
        owner = self._owner()
        self.held = owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()
        return self.held

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}, handle)
        self.held = True
        return True

    def _in_use(self, owner: dict[str, Any]):
        from engine.errors import WorkbenchError

        if valid_pid(owner.get("pid")) is None:
            return WorkbenchError(
                f"{self.path} names no readable owner, and it (or the run's heartbeat) is less than {STALE_SECONDS:g} "
                f"s old: its owner may be writing it right now. Try again in {STALE_SECONDS:g} s (an owner that stays "
                "unreadable is then taken over), or give another --run-dir.")
        return WorkbenchError(
            f"{self.path.parent} is in use by another job (pid {owner.get('pid')} on {owner.get('host')}, "
            f"{LOCK_FILE}). Give another --run-dir, wait for that job to end, or stop it "
            f"(`vlr-workbench stop {self.path.parent}`).")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _owner(self) -> dict[str, Any]:
        return read_owner(self.path)

    def _owner_alive(self, owner: dict[str, Any]) -> bool:
        if not owner:  # being written right now by its owner, or garbage: judge by age
            try:
                return time.time() - self.path.stat().st_mtime < STALE_SECONDS
            except OSError:
                return False
        pid = valid_pid(owner.get("pid"))
        if pid is not None and owner.get("host") == socket.gethostname():
            return pid_alive(pid)
        status = read_status(self.path.parent)  # another host or an unreadable pid: trust a fresh heartbeat only
        beat = _seconds(status.get("heartbeat")) or _seconds(owner.get("time"))
        return time.time() - beat < STALE_SECONDS


@contextlib.contextmanager
def _flocked(directory: Path) -> Iterator[None]:
    """An exclusive flock of ``directory`` itself while inside (no file is left behind; a no-op where fcntl
    is missing)."""
    try:
        import fcntl
    except ImportError:   # not POSIX: O_EXCL alone
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)     # closing the descriptor releases the lock


def pick_run(runs_dir: str | Path, preset_name: str, job: str, require: str = "best.pt") -> tuple[Path, str] | None:
    """(run directory, state) of the newest *finished* run of ``job`` for the preset holding ``require``;
    a stopped, failed or dead one only when no finished run exists (callers name its state)."""
    from engine.runs.run_dir import iter_runs, run_matches

    fallback = None
    for path in iter_runs(runs_dir):
        if run_matches(path, preset_name, job) and (path / require).exists():
            state = run_state(path)
            if state == "finished":
                return path, state
            fallback = fallback or (path, state)
    return fallback
