"""Run directories: ``runs/<time>-<preset>-<job>/`` with the exact preset, metrics and results.

Contents: ``preset.toml`` (the preset used), ``metrics.jsonl`` (one JSON object a line with
``job``, ``stage``, ``epoch``, ``step``, ``split`` and metric values), checkpoints (``*.pt``),
sample strips (``samples/*.png``), ``summary.json`` and, for evaluation, ``eval.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from engine.io import atomic
from engine.errors import WorkbenchError
from engine.events import Log, Metrics, Progress
from engine.runs.records import METRICS, first_record, progress_step, read_metrics, read_status, read_summary
from engine.presets import Preset


LOG_FILE = "log.jsonl"
PROGRESS_FILE = "progress.jsonl"   # every Progress of a job (loss, rate, ETA): what a front end attached later plots


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir: str | Path, preset: Preset, job: str) -> "RunDir":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = runs_root(runs_dir) / f"{stamp}-{preset.name}-{job}"
        base.parent.mkdir(parents=True, exist_ok=True)
        path, n = base, 1
        while True:                  # mkdir is the claim: two processes starting at once never share a directory
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        run = cls(path)
        run.write_preset(preset)
        return run

    @classmethod
    def for_job(cls, preset: Preset, job: str, path: str | Path | None = None) -> "RunDir":
        """Exactly ``path`` when given (e.g. a pipeline's stage folder), else a new one under runs_dir.

        A given ``path`` that already holds a run (``last.pt``) is refused, so no run is overwritten.
        """
        if not path:
            return cls.create(preset.runtime.runs_dir, preset, job)
        path = Path(path).expanduser()
        held = holds_run(path, job)
        if held:
            raise WorkbenchError(f"{path} already holds a run ({held}); a new {job} run would overwrite or mix with "
                                 "its files. Give a new --run-dir, leave it out to get runs/<time>-<preset>-<job>, "
                                 "or continue an unfinished run of the same job with --resume.")
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        run.write_preset(preset)
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        if not (path / "preset.toml").is_file():
            raise WorkbenchError(f"{path} is not a run directory (it has no preset.toml). Give a directory "
                                 "made by train-dsr, finetune, evaluate or pipeline, e.g. runs/<time>-<preset>-<job>.")
        return cls(path)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    tensorboard = None   # engine.runs.tensorboard.LiveLog when the preset has runtime.tensorboard = true

    def write_preset(self, preset: Preset) -> None:
        atomic.write_text(self.path / "preset.toml", tomli_w.dumps(preset.to_mapping()))
        if preset.runtime.tensorboard and self.tensorboard is None:
            from engine.runs.tensorboard import LiveLog   # lazy: torch.utils.tensorboard only when asked for
            self.tensorboard = LiveLog(self.path)

    def log_metrics(self, event: Metrics) -> None:
        """Append one line to metrics.jsonl (non-finite values are written as null)."""
        record = {"job": event.job, "stage": event.stage, "epoch": event.epoch, "step": event.step,
                  "split": event.split, "time": round(time.time(), 3)}
        record.update({k: (float(v) if math.isfinite(float(v)) else None) for k, v in event.values.items()})
        self._append(record)
        if self.tensorboard is not None:
            self.tensorboard.log_record(record)

    def log_error(self, job: str, stage: str, epoch: int, error: str) -> None:
        """Append ``{"split": "error", "error": ...}`` to metrics.jsonl (e.g. an OOM, read by engine.tips)."""
        self._append({"job": job, "stage": stage, "epoch": epoch, "split": "error", "error": str(error),
                      "time": round(time.time(), 3)})

    def log_line(self, event: Log) -> None:
        """Append a Log event to log.jsonl (what ``attach`` shows of a run started elsewhere)."""
        self._append({"job": event.job, "level": event.level, "message": event.message,
                      "time": round(time.time(), 3)}, self.path / LOG_FILE)

    def log_progress(self, event: Progress, global_step: int) -> None:
        """Append a Progress event to progress.jsonl (a follower's live loss curve and progress line)."""
        record = {"job": event.job, "stage": event.stage, "epoch": event.epoch, "epochs": event.epochs,
                  "step": event.step, "steps": event.steps, "global_step": global_step,
                  "images_per_second": round(event.images_per_second, 2),
                  "eta_seconds": None if event.eta_seconds is None else round(event.eta_seconds, 1),
                  "loss": event.loss if event.loss is not None and math.isfinite(event.loss) else None,
                  "time": round(time.time(), 3)}
        self._append(record, self.path / PROGRESS_FILE)

    def _append(self, record: dict[str, Any], path: Path | None = None) -> None:
        path = path or self.metrics_path
        try:   # never through a link (check_own_files refuses one up front; this is the last line of defence)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if path.is_symlink():
                raise WorkbenchError(f"{path} is a symlink: a run appends only to its own files. Replace the link "
                                     "with a copy of its target (or remove it).") from None
            raise
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    WRITTEN = ("metrics.jsonl", LOG_FILE, PROGRESS_FILE, "status.json", "summary.json", "owner.lock",
               "stop.request", "samples", "tensorboard", "best.pt", "last.pt", "preset.toml")

    def check_own_files(self) -> None:
        """A run resumed writes into its own directory: a file or folder it writes that is a symlink (copied or
        synced runs hold them) is refused before anything is written, so nothing lands outside the run."""
        linked = [name for name in self.WRITTEN if (self.path / name).is_symlink()]
        folders = ("samples", "tensorboard")
        wrong = [name for name in self.WRITTEN if not (self.path / name).is_symlink() and (self.path / name).exists()
                 and (self.path / name).is_dir() != (name in folders)]
        if wrong:
            raise WorkbenchError(f"{self.path}: {', '.join(wrong)} should be "
                                 f"{'a folder' if wrong[0] in folders else 'a file'} but is not; the run directory "
                                 "was damaged or edited. Move it away (or restore it from a copy), then resume again.")
        if linked:
            verb = "is a symlink" if len(linked) == 1 else "are symlinks"
            raise WorkbenchError(f"{self.path}: {', '.join(linked)} {verb}; a resumed run writes only into its own files, never through a link. Replace each "
                                 "link with a copy of what it points to (or remove it), then resume again.")

    def truncate_metrics(self, last_step: int) -> int:
        """Drop records logged after global step ``last_step`` (a resumed run re-logs them); returns how many
        metrics records went (progress.jsonl is cut the same way).

        A run killed between logging an epoch and saving last.pt would otherwise list that epoch twice.
        """
        records = read_metrics(self.path, strict=True)
        keep = [r for r in records if (r.get("step") or 0) <= last_step or r.get("split") == "error"]
        if len(keep) != len(records) or _torn(self.metrics_path):
            atomic.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))
        progress_path = self.path / PROGRESS_FILE
        if progress_path.is_file():
            lines = progress_path.read_text(encoding="utf-8", errors="replace").splitlines()
            kept = [line for line in lines if progress_step(line) <= last_step]
            if len(kept) != len(lines) or _torn(progress_path):
                atomic.write_text(progress_path, "".join(line + "\n" for line in kept))
        return len(records) - len(keep)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json; the files it names inside the run are written relative to the run (a copy stays whole)."""
        atomic.write_json(self.summary_path, _relative_links(self.path, summary))

    def read_summary(self) -> dict[str, Any]:
        return read_summary(self.path)


RESULT_FILES = ("last.pt", "summary.json", "eval.json")   # a run has produced results: never start another in it


def holds_run(path: Path, job: str) -> str | None:
    """Why ``path`` holds a run a new ``job`` must not be started in, or None.

    A folder holding only preset.toml (and a launcher's log) is not a run yet: the app, the pipeline and
    pre-training make it before they pass it as --run-dir. An attempt of the same job killed before its
    first last.pt (status/metrics only) may start again in place; another job's files never.
    """
    for name in RESULT_FILES:
        if (path / name).exists():
            return name
    owner = read_status(path).get("job")
    if owner is not None and owner != job:
        return f"status.json of a {owner} run"
    logged = first_record(path / "metrics.jsonl", METRICS).get("job")
    if logged is not None and logged != job:
        return f"metrics.jsonl of a {logged} run"
    return None


LINK_KEYS = ("eval_json", "eval_folds_json")   # summary.json keys naming a file (also in each of ``folds``)


def _relative_links(run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    def relative(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        try:
            return str(Path(os.path.abspath(value)).relative_to(os.path.abspath(run)))
        except ValueError:   # outside the run (e.g. a pipeline's stage runs beside it): kept as it is
            return value

    out = {k: relative(v) if k in LINK_KEYS else v for k, v in summary.items()}
    if isinstance(summary.get("folds"), list):
        out["folds"] = [_relative_links(run, f) if isinstance(f, dict) else f for f in summary["folds"]]
    return out


def linked_file(run_dir: str | Path, named: Any) -> Path | None:
    """The file a run's summary.json names (``eval_json``, ...), or None when it names none.

    A relative name is relative to the run. An absolute one (runs written before, or a copy's) is the run's
    own file when the run holds it: the longest tail of the name found inside the run, else beside the run
    (a copied runs directory), else the name itself.
    """
    if not isinstance(named, str) or not named:
        return None
    run, path = Path(run_dir), Path(named)
    if not path.is_absolute():
        return run / path
    parts = path.parts[1:]
    for base in (run, run.parent):
        for i in range(len(parts)):
            candidate = base.joinpath(*parts[i:])
            if candidate.is_file():
                return candidate
    return path


def _torn(path: Path) -> bool:
    """True when a JSON-lines file ends inside a line (its writer was killed mid-line)."""
    return path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")


def runs_root(runs_dir: str | Path) -> Path:
    """``runtime.runs_dir`` as a path: ``~`` and ``~user`` expanded; the filesystem root refused."""
    root = Path(runs_dir).expanduser()
    if str(root) and Path(os.path.abspath(root)) == Path(os.path.abspath(root)).parent:
        raise WorkbenchError(f"runtime.runs_dir is {str(runs_dir)!r}, the filesystem root: every run would become a "
                             "folder in it. Set runtime.runs_dir to a directory of its own, e.g. \"runs\" or "
                             "\"~/vlr-runs\" (or give --run-dir).")
    return root


def iter_runs(runs_dir: str | Path, marks: tuple[str, ...] = ()) -> Iterator[Path]:
    """Run directories under ``runs_dir`` (holding preset.toml, or any of ``marks``), newest first."""
    root = runs_root(runs_dir)
    if not root.is_dir():
        return iter(())

    def is_run(p: Path) -> bool:
        return (p / "preset.toml").is_file() or (p.is_dir() and any((p / m).exists() for m in marks))

    return iter(sorted((p for p in root.iterdir() if is_run(p)), key=lambda p: p.name, reverse=True))


def latest_run(runs_dir: str | Path, preset_name: str, job: str, *, require: str | None = None) -> Path | None:
    """The newest run of ``job`` for ``preset_name`` (holding file ``require`` when given)."""
    for path in iter_runs(runs_dir):
        if run_matches(path, preset_name, job):
            if require is None or (path / require).exists():
                return path
    return None


def run_matches(path: Path, preset_name: str, job: str) -> bool:
    """Whether a run directory's name says it is a ``job`` run of ``preset_name`` (<time>-<preset>-<job>[-N])."""
    return path.name.endswith(f"-{preset_name}-{job}") or f"-{preset_name}-{job}-" in path.name
