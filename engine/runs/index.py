"""The runs table's data: one ``RunRow`` per run directory of a runs folder ("which preset won").

A row holds what a user compares runs by: preset, job, state (``engine.runs.status``: a run killed
mid-way reads ``dead``, never ``finished``), age, epochs, best val PSNR and its gain over bicubic,
rank-1 of dsr / bicubic / hr from eval.json, and the preset keys that differ from a reference
preset. A pipeline run reads its stage runs (summary.json ``stages``). Nothing here raises for a
damaged run: unreadable files give empty cells and a ``problem`` note.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.errors import WorkbenchError
from engine.presets import Preset, diff, load
from engine.jobs.registry import JOBS
from engine.runs.status import read_status, run_state
from engine.runs.run_dir import iter_runs
from engine.runs.records import key_file_problems, read_evaluation, read_metrics, stage_dirs

RUN_FILES = ("preset.toml", "status.json", "metrics.jsonl", "summary.json")   # any one: a run (maybe damaged)

JOB_NAMES = tuple(JOBS)          # the job kinds a run directory name may end with
SORT_KEYS = ("age", "name", "preset", "job", "state", "epochs", "psnr", "gain", "dsr", "bicubic", "hr")
DESCENDING_BY_DEFAULT = {"epochs", "psnr", "gain", "dsr", "bicubic", "hr"}   # best first
_STAMP = re.compile(r"^(\d{8}-\d{6})-(.+)$")


@dataclass
class RunRow:
    path: Path
    name: str
    preset: str
    job: str
    state: str
    started: float | None          # epoch seconds
    epochs: int                    # epochs completed (all stages)
    best_psnr: float | None        # best val PSNR of DSR, dB
    bicubic_psnr: float | None     # bicubic val PSNR at that epoch
    rank1: dict[str, float | None] = field(default_factory=dict)   # dsr / bicubic / hr
    differs: list[str] = field(default_factory=list)               # keys differing from the reference
    problem: str = ""
    camera: str = ""               # eval.json's camera protocol when not clean: "same camera", "unseen camera"

    @property
    def gain(self) -> float | None:
        if self.best_psnr is None or self.bicubic_psnr is None:
            return None
        return self.best_psnr - self.bicubic_psnr

    def age_seconds(self, now: float | None = None) -> float | None:
        return None if self.started is None else max(0.0, (now or time.time()) - self.started)

    def sort_value(self, key: str) -> Any:
        values = {"age": -(self.started or 0.0), "name": self.name, "preset": self.preset, "job": self.job,
                  "state": self.state, "epochs": self.epochs, "psnr": self.best_psnr, "gain": self.gain,
                  "dsr": self.rank1.get("dsr"), "bicubic": self.rank1.get("bicubic"), "hr": self.rank1.get("hr")}
        return values[key]

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["gain"] = self.gain
        data["age_seconds"] = self.age_seconds(now)
        return data


def format_age(seconds: float | None) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


CAMERA_MARKS = {"same camera": "same cam", "unseen camera": "unseen cam"}   # shown beside the job
DISPLAY_COLUMNS = ("preset", "job", "state", "age", "epochs", "best PSNR", "gain", "dsr r1%", "bic r1%", "hr r1%")


def display_cells(row: RunRow, now: float | None = None) -> list[str]:
    """The text cells of a row, in DISPLAY_COLUMNS order (the CLI and the app show the same)."""
    job = f"{row.job} ({CAMERA_MARKS[row.camera]})" if row.camera in CAMERA_MARKS else row.job
    return [row.preset, job, row.state, format_age(row.age_seconds(now)), str(row.epochs or "-"),
            _cell(row.best_psnr, ".2f"), _cell(row.gain, "+.2f"),
            *(_cell(None if row.rank1.get(k) is None else 100 * row.rank1[k], ".1f") for k in ("dsr", "bicubic", "hr"))]


def split_name(name: str) -> tuple[str, str, float | None]:
    """(preset, job, started) from ``<YYYYmmdd-HHMMSS>-<preset>-<job>[-N]``; '' for what is not there."""
    match = _STAMP.match(name)
    started = None
    rest = name
    if match:
        rest = match.group(2)
        try:
            started = time.mktime(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
        except ValueError:
            started = None
    for job in JOB_NAMES:
        found = re.match(rf"^(.*)-{re.escape(job)}(-\d+)?$", rest)
        if found:
            return found.group(1), job, started
    return rest, "", started


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _evaluation(dirs: Iterable[Path]) -> dict[str, Any]:
    for path in dirs:
        data = read_evaluation(path / "eval.json")
        if data is not None:
            return data
    return {}


def _best_psnr(records: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    best: tuple[float | None, float | None] = (None, None)
    for record in records:
        if record.get("stage") != "dsr" or record.get("split") != "val":
            continue
        psnr = _number(record.get("psnr"))
        if psnr is not None and (best[0] is None or psnr > best[0]):
            best = (psnr, _number(record.get("bicubic_psnr")))
    return best


def _epochs(records: list[dict[str, Any]]) -> int:
    """Epochs completed over all training stages (the highest epoch logged per stage, added up)."""
    per_stage: dict[str, int] = {}
    for record in records:
        stage, epoch = record.get("stage"), record.get("epoch")
        if record.get("split") in ("train", "val") and stage != "eval" and isinstance(epoch, int):
            per_stage[str(stage)] = max(per_stage.get(str(stage), 0), epoch)
    return sum(per_stage.values())


def read_row(path: str | Path, reference: Preset | None = None) -> RunRow:
    """The row of one run directory; ``differs`` lists the keys whose values differ from ``reference``."""
    path = Path(path)
    preset_name, job, started = split_name(path.name)
    status = read_status(path)
    problem = ""
    preset: Preset | None = None
    try:
        preset = load(path / "preset.toml")
        preset_name = preset.name
    except WorkbenchError as exc:
        problem = f"preset.toml unreadable: {str(exc).splitlines()[0][:120]}"
    problem = "; ".join(filter(None, [problem, *key_file_problems(path)]))
    job = str(status.get("job") or job)
    if "started" in status:
        started = float(status["started"])
    if started is None:
        started = path.stat().st_mtime
    dirs = [path, *stage_dirs(path)]
    records = [record for folder in dirs for record in read_metrics(folder)]
    if not job:
        job = next((str(r["job"]) for r in records if r.get("job")), "")
    best, bicubic = _best_psnr(records)
    evaluation = _evaluation(dirs)
    rank1 = {row: _number((evaluation.get(row) or {}).get("rank1")) for row in ("dsr", "bicubic", "hr")}
    camera_name = evaluation.get("protocol", {}).get("camera", {}).get("protocol", "")
    differs = [key for key, _, _ in diff(reference, preset)] if reference is not None and preset is not None else []
    state = "damaged" if problem else run_state(path)
    return RunRow(path=path, name=path.name, preset=preset_name, job=job, state=state, started=started,
                  epochs=_epochs(records), best_psnr=best, bicubic_psnr=bicubic, rank1=rank1, differs=differs,
                  problem=problem, camera="" if camera_name == "clean" else camera_name)


def index_runs(runs_dir: str | Path, reference: Preset | None = None) -> list[RunRow]:
    """Every run directory under ``runs_dir`` (newest first)."""
    return [read_row(path, reference) for path in iter_runs(runs_dir, marks=RUN_FILES)]


def filter_rows(rows: Iterable[RunRow], *, preset: str | None = None, job: str | None = None) -> list[RunRow]:
    return [row for row in rows if (not preset or row.preset == preset) and (not job or row.job == job)]


def sort_rows(rows: Iterable[RunRow], key: str, descending: bool | None = None) -> list[RunRow]:
    """Rows sorted by ``key`` (one of SORT_KEYS); empty cells always last."""
    if key not in SORT_KEYS:
        raise WorkbenchError(f"cannot sort runs by '{key}'. Sort keys: {', '.join(SORT_KEYS)}.")
    if descending is None:
        descending = key in DESCENDING_BY_DEFAULT
    rows = list(rows)
    present = [row for row in rows if row.sort_value(key) is not None]
    missing = [row for row in rows if row.sort_value(key) is None]
    return sorted(present, key=lambda row: row.sort_value(key), reverse=descending) + missing


@dataclass(frozen=True)
class Delta:
    metric: str
    a: float | None
    b: float | None

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


def metric_deltas(a: RunRow, b: RunRow) -> list[Delta]:
    """The headline metrics of two runs side by side (b - a)."""
    return [Delta("epochs", float(a.epochs), float(b.epochs)),
            Delta("best val PSNR dB", a.best_psnr, b.best_psnr),
            Delta("gain over bicubic dB", a.gain, b.gain),
            *(Delta(f"rank-1 {row}", a.rank1.get(row), b.rank1.get(row)) for row in ("dsr", "bicubic", "hr"))]


def preset_diff(a: RunRow, b: RunRow) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every preset key the two runs differ in."""
    try:
        return diff(load(a.path / "preset.toml"), load(b.path / "preset.toml"))
    except WorkbenchError as exc:
        raise WorkbenchError(f"cannot compare the presets of {a.name} and {b.name}: {exc}") from None


def metrics_csv(run_dirs: Iterable[str | Path]) -> str:
    """metrics.jsonl of several runs as one CSV: a ``run`` column, then job/stage/epoch/step/split, then
    every metric any run logged (empty where a run did not log it)."""
    head = ["run", "job", "stage", "epoch", "step", "split", "time"]
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        if not (path / "preset.toml").is_file():
            raise WorkbenchError(f"{path} is not a run directory (it has no preset.toml). Give directories "
                                 "listed by `vlr-workbench runs`.")
        for record in read_metrics(path):
            rows.append({"run": path.name, **record})
            names += [k for k in record if k not in head and k not in names]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=head + names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()
