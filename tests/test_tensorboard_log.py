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
