"""The studies a front end watches (the app's Sweeps tab) and a snapshot of one.

A study lives in ``runs_dir/sweeps/STUDY.journal`` (one host) or in an RDB server (``--storage URL``, several
machines). Its controller on this host keeps ``runs_dir/sweeps/STUDY/status.json`` (running, finished, stopped,
failed, or dead when its process is gone), and ``stop_sweep`` asks it to stop (its running trials stop with
their checkpoints); a study run by a controller on another machine shows ``-`` here and is stopped there.

An RDB storage is opened once per URL and kept (its connection pool checks each connection before use, so a
restarted server is reconnected to); a listing never waits for a server that does not answer beyond the
connection timeout (``engine.sweep.storage``): the caller gets the storage's one-paragraph error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError
from engine.runs.status import request_stop, run_state
from engine.sweep.places import sweeps_dir
from engine.sweep.storage import masked, open_storage, storage_error

_OPENED: dict[str, Any] = {}          # URL -> its RDB storage, opened once
_OPENING = threading.Lock()


@dataclass(frozen=True)
class StudyEntry:
    name: str
    control: Path              # runs_dir/sweeps/STUDY: this host's controller status (it may not exist)
    state: str                 # its controller's here: running, finished, stopped, failed, dead; "-" when none
    modified: float            # a journal's last change; an RDB study: its controller's here (0 when none)
    storage: str | None = None   # the RDB URL holding the study; None: the journal file

    @property
    def key(self) -> str:
        return study_key(self.name, self.storage)

    @property
    def journal(self) -> Path:
        return self.control.parent / f"{self.name}.journal"


def study_key(name: str, storage: str | None) -> str:
    """A study's name in a listing, unique: an RDB study's carries the server it is on (password masked)."""
    return name if storage is None else f"{name} · {server_label(storage)}"


def server_label(url: str) -> str:
    """``postgresql://user:pw@host:5432/db`` -> ``host:5432/db`` (what a list of studies shows of a storage)."""
    rest = masked(url).partition("://")[2]
    return rest.rpartition("@")[2] or url


def list_studies(runs_dir: str | Path, storage: str | None = None) -> tuple[list[StudyEntry], str]:
    """(studies, '' or why ``storage`` could not be read): with ``storage``, its studies first (newest created
    first); then the journal studies under ``runs_dir/sweeps``, most recently changed first (listed also while
    the storage's server does not answer)."""
    folder = sweeps_dir(runs_dir)
    journals = []
    for journal in folder.glob("*.journal") if folder.is_dir() else ():
        try:
            modified = journal.stat().st_mtime
        except OSError:
            continue
        control = folder / journal.stem
        journals.append(StudyEntry(journal.stem, control, controller_state(control), modified))
    journals.sort(key=lambda e: (-e.modified, e.name))
    if not storage:
        return journals, ""
    try:
        return _rdb_studies(folder, storage) + journals, ""
    except WorkbenchError as exc:
        return journals, str(exc)


def _rdb_studies(folder: Path, url: str) -> list[StudyEntry]:
    try:
        studies = rdb_storage(url).get_all_studies()
    except WorkbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's and the driver's errors: one message naming the URL
        raise storage_error(url, exc) from None
    entries = []
    for study in sorted(studies, reverse=True):        # FrozenStudy orders by its id: newest first
        control = folder / study.study_name
        status = control / "status.json"
        modified = status.stat().st_mtime if status.is_file() else 0.0
        entries.append(StudyEntry(study.study_name, control, controller_state(control), modified, url))
    return entries


def rdb_storage(url: str):
    """The RDB storage at ``url``, opened on first use and kept (a failed open is not kept: the next call tries
    again). Calls fail at once when the server is gone (no waiting: a listing is polled again)."""
    with _OPENING:
        if url not in _OPENED:
            _OPENED[url] = open_storage(url, Path("."), wait_s=0.0)
        return _OPENED[url]


def controller_state(control: Path) -> str:
    return run_state(control) if (control / "status.json").is_file() else "-"


def study_snapshot(entry: StudyEntry) -> dict[str, Any]:
    """What the study holds now: its set-up, directions, trials (as ``sweep show``), importances."""
    import optuna

    from engine.sweep.study import importances, trial_rows

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = rdb_storage(entry.storage) if entry.storage else open_storage(None, entry.journal)
        study = optuna.load_study(study_name=entry.name, storage=storage)
        snapshot = {"study": entry.name, "key": entry.key, "storage": entry.storage,
                    "state": controller_state(entry.control), "setup": study.user_attrs.get("setup") or {},
                    "directions": [d.name.lower() for d in study.directions], "trials": trial_rows(study),
                    "importances": importances(study)}
    except WorkbenchError:
        raise
    except KeyError:
        raise WorkbenchError(f"study {entry.name} is no longer in {masked(entry.storage or str(entry.journal))}"
                             ) from None
    except Exception as exc:  # noqa: BLE001 - a server gone between two polls: the storage's one message
        if entry.storage is None:
            raise
        raise storage_error(entry.storage, exc) from None
    return snapshot


def stop_sweep(runs_dir: str | Path, study: str) -> Path:
    """Ask this host's controller of ``study`` to stop (its running trials stop with their checkpoints)."""
    return request_stop(sweeps_dir(runs_dir) / study)

