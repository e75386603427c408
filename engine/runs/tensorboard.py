"""TensorBoard events for a run: live (``runtime.tensorboard = true``) or converted afterwards (``export-tb``).

Scalars are tagged ``<stage>/<split>/<metric>`` (e.g. ``dsr/val/psnr``) with the epoch as the step,
so runs compare epoch by epoch in TensorBoard; sample strips are images tagged ``samples`` at
their epoch. Events go to ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs`` shows every run).
torch.utils.tensorboard needs the ``tensorboard`` package; it is imported only here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError
from engine.io import atomic
from engine.runs.records import read_image, read_metrics, read_object, sample_strips

EVENTS_DIR = "tensorboard"
NOT_METRICS = {"job", "stage", "epoch", "step", "split", "time", "error", "event"}


class TensorBoardLog:
    """A SummaryWriter in ``run_dir/tensorboard`` fed with metrics.jsonl records and sample strips."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:   # tensorboard is a dependency; a broken install says how to fix it
            raise WorkbenchError(f"TensorBoard logging needs the tensorboard package ({exc}). Install it with "
                                 "`pip install -c constraints.txt tensorboard`, or set runtime.tensorboard = "
                                 "false.") from None
        self.path = Path(run_dir) / EVENTS_DIR
        self.writer = SummaryWriter(log_dir=str(self.path))
        self.scalars = 0
        self.images = 0

    def log_metrics(self, record: dict[str, Any]) -> int:
        """Every finite metric of one metrics.jsonl record; returns how many scalars it wrote."""
        stage, split = record.get("stage") or "run", record.get("split") or "all"
        step = record.get("epoch")
        step = step if isinstance(step, int) and not isinstance(step, bool) else int(record.get("step") or 0)
        written = 0
        for name, value in record.items():
            if name in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            self.writer.add_scalar(f"{stage}/{split}/{name}", float(value), global_step=step,
                                   walltime=record.get("time"))
            written += 1
        self.scalars += written
        return written

    def log_image(self, tag: str, path: str | Path, step: int) -> None:
        """A PNG (e.g. a sample strip) as an HWC uint8 image (a file that is no image: left out, warned)."""
        import numpy as np

        image = read_image(Path(path))
        if image is None:
            return
        pixels = np.asarray(image)
        self.writer.add_image(tag, pixels, global_step=step, dataformats="HWC")
        self.images += 1

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class LiveLog(TensorBoardLog):
    """The events of a running job: each metrics record as it is logged, and every sample strip that
    appeared since the last record (a strip is written after its epoch's val metrics)."""

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(run_dir)
        self.run_dir = Path(run_dir)
        self.logged_strips: set[Path] = set()

    def log_record(self, record: dict[str, Any]) -> None:
        self.log_metrics(record)
        self.log_new_strips()
        self.flush()

    def log_new_strips(self) -> None:
        for epoch, png in sample_strips([self.run_dir]):
            if png not in self.logged_strips:
                self.logged_strips.add(png)
                self.log_image("samples", png, epoch)


EXPORT_RECORD = "export.json"   # inside the events folder: the events files `export-tb` wrote (only these are replaced)


def export_run(run_dir: str | Path) -> tuple[Path, dict[str, int]]:
    """Convert a past run (metrics.jsonl and samples/epoch_NNN.png) to TensorBoard events.

    Returns the events folder and the counts written. An earlier export is replaced: only the events
    files recorded in ``tensorboard/export.json`` are deleted (never live events, never through a link).
    """
    run_dir = Path(run_dir)
    events = _export_target(run_dir)
    _remove_own_export(events)
    before = set(events.glob("events.out.tfevents.*")) if events.is_dir() else set()
    log = TensorBoardLog(run_dir)
    try:
        for record in read_metrics(run_dir):
            log.log_metrics(record)
        for epoch, png in sample_strips([run_dir]):
            log.log_image("samples", png, epoch)
    finally:
        log.close()
        written = sorted(p.name for p in set(events.glob("events.out.tfevents.*")) - before)
        atomic.write_json(events / EXPORT_RECORD, {"files": written})
    return log.path, {"scalars": log.scalars, "images": log.images}


def _export_target(run_dir: Path) -> Path:
    """RUN_DIR/tensorboard, checked: a run directory, the folder not a link nor a file (a running run is
    refused by the caller, who knows its state: `export-tb`)."""
    if not (run_dir / "preset.toml").is_file():
        raise WorkbenchError(f"{run_dir} is not a run directory (it has no preset.toml). Give directories listed "
                             "by `vlr-workbench runs`.")
    events = run_dir / EVENTS_DIR
    if events.is_symlink() or (events.exists() and not events.is_dir()):
        kind = "a symlink" if events.is_symlink() else "not a folder"
        raise WorkbenchError(f"{events} is {kind}: `export-tb` writes only into a real `{EVENTS_DIR}` folder inside "
                             "the run and never writes or deletes through a link. Remove or rename it, then export "
                             "again.")
    return events


def _remove_own_export(events: Path) -> None:
    """Delete the events files an earlier `export-tb` recorded as its own (plain files directly inside)."""
    names = (read_object(events / EXPORT_RECORD)[0] or {}).get("files", [])
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, str) or not name.startswith("events.out.tfevents.") or "/" in name:
            continue
        path = events / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
