"""TensorBoard events: `export-tb` converts a past run; runtime.tensorboard = true writes them live."""

from __future__ import annotations

import pytest

from engine.events import Metrics
from engine.presets import load
from engine.runs.run_dir import RunDir
from workbench.cli.main import main

from run_factory import dsr_metrics, write_run

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(folder):
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_export_tb_converts_metrics_and_sample_strips(tmp_path, capsys):
    run = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-train-dsr", load("cpu-demo"), "train-dsr",
                    metrics=dsr_metrics([23.0, 24.5, 24.0]), samples=3)
    assert main(["export-tb", str(run)]) == 0
    assert "15 scalars, 3 images" in capsys.readouterr().out
    events = read_events(run / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("dsr/val/psnr")] == [(1, 23.0), (2, 24.5), (3, 24.0)]
    assert [e.step for e in events.Images("samples")] == [1, 2, 3]
    assert events.Images("samples")[0].width == 128
    assert main(["export-tb", str(run)]) == 0          # again: replaces, does not double
    assert len(read_events(run / "tensorboard").Scalars("dsr/val/psnr")) == 3
    assert main(["export-tb", str(tmp_path)]) == 2


def test_runtime_tensorboard_writes_events_while_logging(tmp_path):
    preset = load("cpu-demo").with_changes({"runtime.tensorboard": True})
    run = RunDir.create(tmp_path / "runs", preset, "train-dsr")
    run.log_metrics(Metrics("train-dsr", "dsr", 1, 10, "val", {"psnr": 21.5, "loss": float("nan")}))
    events = read_events(run.path / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("dsr/val/psnr")] == [(1, 21.5)]
    assert "dsr/val/loss" not in events.Tags()["scalars"]          # non-finite values are skipped
    plain = RunDir.create(tmp_path / "runs", load("cpu-demo"), "train-dsr")
    plain.log_metrics(Metrics("train-dsr", "dsr", 1, 10, "val", {"psnr": 21.5}))
    assert not (plain.path / "tensorboard").exists()                # off by default


def test_export_tb_never_deletes_what_it_did_not_write(tmp_path, capsys):
    run = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-train-dsr", load("cpu-demo"), "train-dsr",
                    metrics=dsr_metrics([23.0, 24.5]), samples=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    theirs = elsewhere / "events.out.tfevents.1.host"
    theirs.write_bytes(b"someone else's events")
    (run / "tensorboard").symlink_to(elsewhere)
    assert main(["export-tb", str(run)]) == 2                   # never writes or deletes through a link
    assert "symlink" in "".join(capsys.readouterr())
    assert theirs.read_bytes() == b"someone else's events"
    (run / "tensorboard").unlink()
    (run / "tensorboard").mkdir()
    live = run / "tensorboard" / "events.out.tfevents.2.host"   # e.g. written live by runtime.tensorboard
    live.write_bytes(b"live events")
    assert main(["export-tb", str(run)]) == 0
    assert main(["export-tb", str(run)]) == 0                   # replaces only its own earlier export
    assert live.read_bytes() == b"live events"
    ours = [p for p in (run / "tensorboard").glob("events.out.tfevents.*") if p != live]
    assert len(ours) == 1


def test_export_tb_refuses_a_running_run(tmp_path, capsys):
    import json
    import os
    import time
    run = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-train-dsr", load("cpu-demo"), "train-dsr",
                    metrics=dsr_metrics([23.0]), samples=0)
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": os.getpid(), "job": "train-dsr",
                                                 "heartbeat": time.time()}))
    (run / "tensorboard").mkdir()
    live = run / "tensorboard" / "events.out.tfevents.3.host"
    live.write_bytes(b"live events")
    assert main(["export-tb", str(run)]) == 2
    assert "running" in "".join(capsys.readouterr())
    assert live.read_bytes() == b"live events"
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == [live.name]
