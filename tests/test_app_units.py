"""Unit tests of the app's pure parts: buffers, chart maths, values, state, plans, launch."""

from __future__ import annotations

import math

import pytest

from engine.errors import PresetError
from engine.presets import Preset, derive, load, save
from engine.runs.run_dir import RunDir
from workbench.app import app_state, launch
from workbench.app.preset_reference import base_preset
from workbench.app.eval_results import format_metric, table_rows
from workbench.app.field_values import edit_text, parse_value
from workbench.app.job_plans import plan_job
from workbench.app.metric_buffers import MetricBuffers, downsample, smooth
from workbench.app.widgets.charts import log_ticks
from workbench.app.widgets.job_panel import format_eta, progress_fraction, progress_text
from engine.events import Progress


def test_buffers_are_bounded_skip_non_finite_and_count_versions():
    buffers = MetricBuffers(maxlen=5)
    for epoch in range(1, 9):
        buffers.add("dsr", "val", epoch, {"psnr": 20.0 + epoch, "loss": math.nan if epoch == 8 else 1.0 / epoch})
    assert buffers.series("dsr", "val", "psnr") == [(float(e), 20.0 + e) for e in range(4, 9)]
    assert [x for x, _ in buffers.series("dsr", "val", "loss")] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert buffers.last("dsr", "val", "psnr") == 28.0 and buffers.version == 8
    buffers.add_records([{"job": "finetune", "stage": "stage1", "epoch": 2, "step": 9, "split": "train",
                          "time": 1.0, "loss": 0.5, "top1": None}])
    assert buffers.series("stage1", "train", "loss") == [(2.0, 0.5)]
    assert buffers.series("stage1", "train", "top1") == [] and buffers.series("stage1", "train", "time") == []
    buffers.clear()
    assert not buffers and buffers.version == 10


def test_a_stamp_changes_only_with_its_own_series_or_a_clear():
    buffers = MetricBuffers()
    live, ft = [("dsr", "live", "loss")], [("stage2", "train", "loss"), ("stage1", "train", "loss")]
    before_live, before_ft = buffers.stamp(live), buffers.stamp(ft)
    buffers.add("dsr", "live", 0.1, {"loss": 1.0})
    assert buffers.stamp(live) != before_live and buffers.stamp(ft) == before_ft   # the live loss moved only
    buffers.add("stage1", "train", 1, {"loss": 0.5, "top1": None})
    assert buffers.stamp(ft) != before_ft
    after = buffers.stamp(ft)
    buffers.clear()
    assert buffers.stamp(ft) != after


def test_downsample_keeps_ends_and_limit():
    points = [(float(i), float(i * i)) for i in range(1000)]
    small = downsample(points, 50)
    assert len(small) == 50 and small[0] == points[0] and small[-1] == points[-1]
    assert all(a[0] < b[0] for a, b in zip(small, small[1:]))
    assert downsample(points[:10], 50) == points[:10]


def test_smoothing_is_debiased_and_lags_a_step():
    assert smooth([1.0, 2.0], 0.0) == [1.0, 2.0]
    assert smooth([3.0] * 5, 0.9) == pytest.approx([3.0] * 5)
    stepped = smooth([0.0] * 5 + [1.0] * 5, 0.6)
    assert stepped[5] == pytest.approx(0.4 / (1 - 0.6 ** 6)) and 0.9 < stepped[-1] < 1.0


def test_log_ticks_label_values():
    ticks, labels = log_ticks(-3.2, 0.4)
    assert ticks == [-3.0, -2.0, -1.0, 0.0] and labels == ["0.001", "0.01", "0.1", "1"]
    ticks, labels = log_ticks(-1.0, -0.5)
    assert len(ticks) == 3 and labels[0] == "0.1"


def test_progress_fraction_and_eta():
    event = Progress("train-dsr", "dsr", epoch=2, epochs=4, step=5, steps=10, eta_seconds=3725)
    assert progress_fraction(event) == pytest.approx(15 / 40)
    assert format_eta(3725) == "1:02:05" and format_eta(None) == "--:--"


def test_a_pipeline_stage_shows_stage_n_of_n_and_an_overall_eta():
    """Issue 26, defect 5: during p the job panel says which stage of how many, and the whole pipeline's ETA."""
    from engine.jobs.pipeline_progress import PipelineProgress
    from engine.presets import store

    preset = store.load("cpu-demo").with_changes({"dsr.epochs": 10, "finetune.stage1_epochs": 2,
                                                  "finetune.stage2_epochs": 3})
    progress = PipelineProgress(("recogniser", "train-dsr", "finetune", "evaluate"), preset, folds=None)
    assert progress.at("train-dsr", None) == {"part": 2, "parts": 4}
    event = progress.annotate(Progress("train-dsr", "dsr", epoch=5, epochs=10, step=2, steps=4, eta_seconds=110.0))
    # 22 steps left in the stage at 5 s a step, then the 5 fine-tuning epochs at 20 s an epoch
    assert (event.part, event.parts) == (2, 4) and event.overall_eta_seconds == pytest.approx(110 + 5 * 20)
    folds = PipelineProgress(("recogniser", "train-dsr", "finetune", "evaluate"), preset, folds=3)
    folds.at("train-dsr", 1)
    assert folds.epochs_after() == 5 + 2 * 15                # this fold's fine-tuning, then two whole folds
    text = progress_text(event)
    assert text.startswith("stage 2/4 · dsr · epoch 5/10") and "ETA 0:01:50 · all ≈0:03:30" in text
    assert "stage 2/4" not in progress_text(Progress("train-dsr", "dsr", 5, 10, 2, 4, eta_seconds=110.0))


def test_parse_value_reads_toml_and_bare_text():
    assert parse_value("1e-3") == 0.001 and parse_value(" 12 ") == 12 and parse_value("true") is True
    assert parse_value("[0.9, 1.1]") == [0.9, 1.1] and parse_value("cuda:1") == "cuda:1"
    assert parse_value('"cpu"') == "cpu" and parse_value("") == ""
    assert edit_text("cpu") == "cpu" and edit_text((0.9, 1.1)) == "[0.9, 1.1]" and edit_text(False) == "false"


def test_last_preset_state_round_trip_and_corrupt_file():
    assert app_state.read_last_preset() is None
    app_state.write_last_preset("vlr-14x16")
    assert app_state.read_last_preset() == "vlr-14x16"
    app_state.state_path().write_text("last_preset = [unclosed")
    assert app_state.read_last_preset() is None


def test_initial_preset_order_requested_then_last_then_demo():
    assert launch.initial_preset(None).name == "cpu-demo"
    app_state.write_last_preset("vlr-14x16")
    assert launch.initial_preset(None).name == "vlr-14x16"
    assert launch.initial_preset("vlr-32x32").name == "vlr-32x32"
    app_state.write_last_preset("deleted-preset")
    assert launch.initial_preset(None).name == "cpu-demo"
    with pytest.raises(PresetError, match="no preset named 'nope'"):
        launch.initial_preset("nope")


def test_launch_app_opens_the_requested_preset_and_remembers_it(monkeypatch, tmp_path):
    from workbench.app.app import WorkbenchApp
    from workbench.cli.main import main

    opened = []

    def fake_run(self):
        opened.append((self.preset.name, self.data))
        return 0

    monkeypatch.setattr(WorkbenchApp, "run", fake_run)
    faces = tmp_path / "faces"
    faces.mkdir()
    assert main(["--preset", "vlr-14x16", "--data", str(faces)]) == 0
    assert opened == [("vlr-14x16", str(faces))] and app_state.read_last_preset() == "vlr-14x16"
    assert main([]) == 0 and opened[-1] == ("vlr-14x16", None)
    assert main(["--preset", "missing"]) == 2


def test_plan_evaluate_uses_latest_checkpoints_or_the_bicubic_baseline(tmp_path):
    preset = load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs")})
    plan = plan_job("evaluate", preset)
    assert plan.kind == "evaluate" and plan.options == {"dsr": None} and "bicubic baseline" in plan.note
    run = RunDir.create(tmp_path / "runs", preset, "train-dsr")
    (run.path / "best.pt").write_bytes(b"x")
    plan = plan_job("evaluate", preset)
    assert plan.options == {"dsr": str(run.path / "best.pt")}
    assert plan_job("finetune", preset).options == {"dsr": str(run.path / "best.pt")}
    assert plan_job("train", preset).kind == "train-dsr" and plan_job("pipeline", preset).options == {}


def test_eval_rows_format_rates_psnr_and_missing():
    rows = {row[0]: row[1:] for row in table_rows({"dsr": None, "bicubic": {"rank1": 0.5, "psnr": 22.0,
                                                                          "eer": 12.5}, "hr": {}})}
    assert rows["rank1"] == ("-", "50.0%", "-") and rows["psnr"] == ("-", "22.00 dB", "-")
    assert rows["eer"][1] == "12.5%"  # already a percentage
    assert len(rows) == 9 and format_metric("auc", 0.91234) == "0.9123" and format_metric("ssim", None) == "-"


def test_base_preset_is_the_parent_or_the_builtin_itself():
    demo = load("cpu-demo")
    base, label = base_preset(demo)
    assert label == f"from {demo.derived_from}" and base.name == demo.derived_from
    save(derive(demo, "mine"), "mine")
    base, label = base_preset(load("mine"))
    assert label == "from cpu-demo" and base == demo
    orphan = Preset(name="orphan", derived_from="gone")
    assert base_preset(orphan)[1] == "defaults"


def test_the_app_modules_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, workbench.app.app, workbench.app.launch; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
