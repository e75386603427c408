"""Which runs of a runs directory changed since the last look, from stat calls alone.

The Runs tab looks every few seconds while it is shown (``take_stamps``, on the UI thread: stat calls
only): the runs directory's mtime (a run added or removed), each listed run's status.json and
metrics.jsonl mtimes, a running run's age bucket (a process that died writes nothing: its state turns
``dead`` by time alone), and preset.toml of the sub-folders that were not runs yet (a run still being
created). When anything differs, ``read_changed`` runs in a thread: it lists the directory again and
reads only the runs that are new or whose stamps changed. No Textual here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engine.presets import Preset
from engine.runs.index import RunRow, read_row
from engine.runs.status import STALE_SECONDS, STATUS_FILE

WATCHED = (STATUS_FILE, "metrics.jsonl")


def mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@dataclass(frozen=True)
class Stamps:
    directory: int | None = None
    runs: tuple[tuple[Path, tuple], ...] = ()            # (run, (mtimes of WATCHED..., age bucket if running))
    candidates: tuple[tuple[Path, int | None], ...] = ()  # (sub-folder that is no run yet, its preset.toml mtime)

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.runs]

    @property
    def waiting(self) -> list[Path]:
        return [path for path, _ in self.candidates]


def _bucket(now: float) -> int:
    return int(now // STALE_SECONDS)


def take_stamps(runs_dir: Path, runs: Iterable[Path], candidates: Iterable[Path], running: set[Path],
                now: float) -> Stamps:
    """The stamps of ``runs`` (``running``: those shown as running) and of the ``candidates``."""
    return Stamps(mtime(runs_dir),
                  tuple((path, (*(mtime(path / name) for name in WATCHED),
                                _bucket(now) if path in running else None)) for path in runs),
                  tuple((path, mtime(path / "preset.toml")) for path in candidates))


def list_runs(runs_dir: Path) -> tuple[list[Path], list[Path]]:
    """(run directories newest first, sub-folders without preset.toml) of ``runs_dir``."""
    try:
        folders = [path for path in Path(runs_dir).iterdir() if path.is_dir()]
    except OSError:
        return [], []
    runs = sorted((path for path in folders if (path / "preset.toml").is_file()), key=lambda p: p.name, reverse=True)
    found = set(runs)
    return runs, sorted(path for path in folders if path not in found)


def read_changed(runs_dir: Path, old_rows: dict[Path, RunRow], old: Stamps, reference: Preset | None,
                 now: float) -> tuple[list[RunRow], Stamps]:
    """(every run's row, newest first; the stamps they were read at): rows read again only where new or
    changed since ``old``. Runs in a thread (it reads metrics files)."""
    runs_dir = Path(runs_dir)
    directory = mtime(runs_dir)                     # before listing: a run made meanwhile is seen next time
    runs, candidates = list_runs(runs_dir)
    before = dict(old.runs)
    files = {path: tuple(mtime(path / name) for name in WATCHED) for path in runs}
    rows = []
    for path in runs:
        kept = old_rows.get(path)
        unchanged = kept is not None and path in before and before[path][:len(WATCHED)] == files[path] and \
            before[path][-1] in (None, _bucket(now))
        if unchanged:
            rows.append(kept)
            continue
        try:
            rows.append(read_row(path, reference))
        except OSError:                              # removed while being read: gone from the table
            continue
    stamps = Stamps(directory, tuple((row.path, (*files[row.path], _bucket(now) if row.state == "running" else None))
                                     for row in rows),
                    tuple((path, mtime(path / "preset.toml")) for path in candidates))
    return rows, stamps
