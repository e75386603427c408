"""Run directories written by hand for the runs-table tests (the files jobs write, see engine/runs.py).

``make_runs(root)`` writes six runs of known content: finished DSR runs of two presets (one with a
higher learning rate), a stopped fine-tuning run, a failed run, a run killed mid-way (status
running, stale heartbeat, process gone) and an evaluation with eval.json.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from engine.presets import derive, load
from engine.runs.run_dir import RunDir


def gone_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_run(root: Path, name: str, preset, job: str, *, metrics=(), status: dict | None = None,
              summary: dict | None = None, evaluation: dict | None = None, samples: int = 0) -> Path:
    path = Path(root) / name
    path.mkdir(parents=True)
    run = RunDir(path)
    run.write_preset(preset)
    with open(path / "metrics.jsonl", "w", encoding="utf-8") as handle:
        for record in metrics:
            handle.write(json.dumps({"job": job, **record}) + "\n")
    if status is not None:
        (path / "status.json").write_text(json.dumps({"job": job, "pid": 1, "host": socket.gethostname(),
                                                      "started": time.time() - 600, **status}))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    if evaluation is not None:
        (path / "eval.json").write_text(json.dumps(evaluation))
    for epoch in range(1, samples + 1):
        (path / "samples").mkdir(exist_ok=True)
        sample_strip(epoch).save(path / "samples" / f"epoch_{epoch:03d}.png")
    return path


def sample_strip(epoch: int, rows: int = 2, size: int = 32) -> Image.Image:
    """A VLR | bicubic | SR | HR grid whose SR column brightens with the epoch (tests tell epochs apart)."""
    image = Image.new("RGB", (4 * size, rows * size), (255, 255, 255))
    for row in range(rows):
        for col, shade in enumerate((60, 110, min(250, 40 * epoch), 200)):
            tile = Image.new("RGB", (size - 2, size - 2), (shade, 255 - shade, (row * 80) % 255))
            image.paste(tile, (col * size + 1, row * size + 1))
    return image


def dsr_metrics(psnrs, bicubic=22.0, lr_loss=1.0):
    records = []
    for epoch, psnr in enumerate(psnrs, start=1):
        records.append({"stage": "dsr", "epoch": epoch, "step": epoch * 10, "split": "train",
                        "loss": lr_loss / epoch, "l1": 0.5 / epoch})
        records.append({"stage": "dsr", "epoch": epoch, "step": epoch * 10, "split": "val", "loss": 1.1 / epoch,
                        "psnr": psnr, "bicubic_psnr": bicubic})
    return records


EVAL = {"dsr": {"rank1": 0.625}, "bicubic": {"rank1": 0.5}, "hr": {"rank1": 0.95}}


def make_runs(root: Path) -> dict[str, Path]:
    demo = load("cpu-demo")
    fast = demo.with_changes({"dsr.learning_rate": 5e-3, "dsr.epochs": 4}, source="test")
    fast = derive(fast, "fast-demo")
    runs = {
        "finished": write_run(root, "20260101-100000-cpu-demo-train-dsr", demo, "train-dsr",
                              metrics=dsr_metrics([23.0, 24.5, 24.0]),
                              status={"state": "finished", "heartbeat": time.time() - 500}, samples=3),
        "fast": write_run(root, "20260101-110000-fast-demo-train-dsr", fast, "train-dsr",
                          metrics=dsr_metrics([22.5, 25.5, 26.0, 25.0], lr_loss=2.0),
                          status={"state": "finished", "heartbeat": time.time() - 400}),
        "stopped": write_run(root, "20260101-120000-cpu-demo-finetune", demo, "finetune",
                             metrics=[{"stage": "stage1", "epoch": 1, "step": 5, "split": "train", "loss": 3.0},
                                      {"stage": "stage1", "epoch": 1, "step": 5, "split": "val", "top1": 0.2}],
                             status={"state": "stopped", "heartbeat": time.time() - 300}),
        "failed": write_run(root, "20260101-130000-vlr-32x32-train-dsr", load("vlr-32x32"), "train-dsr",
                            metrics=[{"stage": "dsr", "epoch": 1, "step": 3, "split": "train", "loss": None}],
                            status={"state": "failed", "heartbeat": time.time() - 200,
                                    "message": "loss is not finite"}),
        "dead": write_run(root, "20260101-140000-cpu-demo-train-dsr-2", demo, "train-dsr",
                          metrics=dsr_metrics([21.0]),
                          status={"state": "running", "pid": gone_pid(), "heartbeat": time.time() - 3600}),
        "evaluate": write_run(root, "20260101-150000-cpu-demo-evaluate", demo, "evaluate", evaluation=EVAL,
                              summary={"rank1_dsr": 0.625}),
    }
    return runs
