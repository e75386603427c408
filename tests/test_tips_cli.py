"""``vlr-workbench tips RUN_DIR``: printed tips and targets, ``--apply N --save-as NAME``, user errors."""

from __future__ import annotations

import json

import pytest

from engine.events import Metrics
from engine.presets import load, user_dir
from engine.runs.run_dir import RunDir
from workbench.cli.main import main


def flat(text: str) -> str:
    """Output with rich's line wrapping (80 columns under capture) undone."""
    return " ".join(text.split())


@pytest.fixture
def nan_run(tmp_path) -> RunDir:
    """A DSR run of vlr-32x32 whose train loss became NaN at epoch 3."""
    run = RunDir.create(tmp_path / "runs", load("vlr-32x32"), "train-dsr")
    for epoch, loss in enumerate([0.50, 0.40, float("nan"), 0.35], 1):
        run.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 20, "train", {"loss": loss, "l1": 0.06}))
        run.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 20, "val",
                                {"loss": 0.45, "psnr": 26.0 + epoch, "identity": 0.10, "l1": 0.05}))
    return run


def test_nan_loss_run_prints_the_instability_fix_and_targets(nan_run, capsys):
    assert main(["tips", str(nan_run.path)]) == 0
    out = capsys.readouterr().out
    assert "1. Unstable training" in out and "2." not in out.split("Validation targets")[0]
    assert "loss (train) of stage dsr at epoch 3" in flat(out)
    assert "dsr.grad_clip: 1.0 -> 0.5" in out
    assert "dsr.learning_rate: 1.3e-4 -> 1e-4" in out and "dsr.warmup_epochs: 5 -> 8" in out
    assert "Validation targets (32x32 set)" in out
    assert "30.00 dB" in out and "not met" in out and "no data" in out


def test_a_loss_written_as_nan_by_python_s_json_is_read_and_proposes_the_instability_fix(tmp_path, capsys):
    """A metrics.jsonl line holding NaN, Infinity or -Infinity (what json.dumps writes) is data, not damage: it
    was skipped as damaged, so tips never saw the divergence."""
    import math

    from engine.runs.index import read_row
    from engine.runs.records import read_metrics

    run = RunDir.create(tmp_path / "runs", load("vlr-32x32"), "train-dsr")
    with open(run.metrics_path, "a", encoding="utf-8") as handle:
        for epoch, loss in enumerate([0.50, 0.40, float("nan"), float("inf")], 1):
            for split, values in (("train", {"loss": loss, "l1": -math.inf if epoch == 4 else 0.06}),
                                  ("val", {"loss": 0.45, "psnr": math.nan if epoch == 4 else 26.0 + epoch})):
                handle.write(json.dumps({"job": "train-dsr", "stage": "dsr", "epoch": epoch, "step": epoch * 20,
                                         "split": split, **values}) + "\n")
    assert "NaN" in run.metrics_path.read_text() and "-Infinity" in run.metrics_path.read_text()
    records = read_metrics(run.path)
    assert len(records) == 8 and math.isnan(records[4]["loss"]) and records[6]["loss"] == math.inf
    assert records[6]["l1"] == -math.inf and math.isnan(records[7]["psnr"])
    assert read_row(run.path).best_psnr == 29.0          # the runs table's best PSNR: finite values only
    assert main(["tips", str(run.path)]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "1. Unstable training" in out
    assert "loss (train) of stage dsr at epoch 3, loss (train) of stage dsr at epoch 4" in flat(out)
    assert "dsr.grad_clip: 1.0 -> 0.5" in out


def test_targets_say_which_epoch_their_value_is_from(nan_run, capsys, monkeypatch):
    """tips showed the last epoch's PSNR under the name the runs table gives its best PSNR: each target
    now says whether it is the last or the best epoch, and which."""
    from engine.tips import check_targets

    nan_run.log_metrics(Metrics("train-dsr", "dsr", 5, 100, "val", {"psnr": 27.5}))
    for epoch, top1 in ((1, 0.70), (2, 0.85), (3, 0.80)):
        nan_run.log_metrics(Metrics("finetune", "stage1", epoch, epoch * 10, "val", {"top1": top1}))
    monkeypatch.setenv("COLUMNS", "200")                   # a table row a line
    assert main(["tips", str(nan_run.path)]) == 0
    out = flat(capsys.readouterr().out)
    assert "DSR val PSNR (last epoch: 5) │ 27.50 dB" in out and "Stage 1 val accuracy (best epoch: 2) │ 85.0%" in out
    assert "│ Stage 2 val accuracy │ - │" in out                # no data: no epoch to name
    assert main(["runs", str(nan_run.path.parent)]) == 0
    out = flat(capsys.readouterr().out)
    assert "best PSNR" in out and "30.00" in out                # the runs table: the best epoch's (epoch 4)
    targets = {t.name: t for t in check_targets([], load("vlr-32x32"), {"dsr": {"rank1": 0.9}})}
    assert targets["Final accuracy (eval rank-1)"].label == "Final accuracy (eval rank-1)"


def test_apply_saves_the_patched_preset(nan_run, capsys):
    assert main(["tips", str(nan_run.path), "--apply", "1", "--save-as", "steady"]) == 0
    out = capsys.readouterr().out
    assert "dsr.grad_clip: 1.0 -> 0.5" in out and "steady.toml" in out
    saved = load(user_dir() / "steady.toml")
    assert (saved.name, saved.derived_from) == ("steady", "vlr-32x32")
    assert (saved.dsr.grad_clip, saved.dsr.learning_rate, saved.dsr.warmup_epochs) == (0.5, 1.0e-4, 8)
    assert saved.dsr.batch_size == 14  # untouched values stay
    assert main(["tips", str(nan_run.path), "--apply", "1", "--save-as", "steady"]) == 2
    assert "already exists" in flat(capsys.readouterr().err)
    assert main(["tips", str(nan_run.path), "--apply", "1", "--save-as", "steady", "--force"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--apply", "1", "--save-as", "vlr-32x32"], "built-in"),
    (["--apply", "4", "--save-as", "mine"], "has 1 tip(s)"),
    (["--apply", "1"], "go together"),
])
def test_bad_apply_requests_are_user_errors(nan_run, capsys, extra, message):
    assert main(["tips", str(nan_run.path), *extra]) == 2
    assert message in flat(capsys.readouterr().err)
    assert not (user_dir() / "mine.toml").exists()


def test_oom_record_and_healthy_runs(tmp_path, capsys):
    run = RunDir.create(tmp_path, load("vlr-14x16"), "finetune")
    run.log_error("finetune", "stage2", 1, "CUDA out of memory. Tried to allocate 2.00 GiB")
    assert json.loads(run.metrics_path.read_text())["split"] == "error"
    assert main(["tips", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "finetune.batch_size: 32 -> 24" in out and "(14x16 set)" in out
    quiet = RunDir.create(tmp_path, load("cpu-demo"), "train-dsr")
    assert main(["tips", str(quiet.path)]) == 0
    assert "No tips" in capsys.readouterr().out
    assert main(["tips", str(quiet.path), "--apply", "1", "--save-as", "x"]) == 2
    assert "has no tips to apply" in flat(capsys.readouterr().err)


def test_not_a_run_directory(tmp_path, capsys):
    assert main(["tips", str(tmp_path)]) == 2
    assert "is not a run directory (it has no preset.toml)" in flat(capsys.readouterr().err)


def test_pipeline_run_reads_its_stage_runs(tmp_path, capsys):
    """A pipeline run dir holds only summary.json: tips read the stages' metrics and eval.json it names."""
    preset = load("vlr-32x32").with_changes({"runtime.runs_dir": str(tmp_path)})
    pipeline = RunDir.create(tmp_path, preset, "pipeline")
    dsr = RunDir.create(tmp_path, preset, "train-dsr")
    evaluate = RunDir.create(tmp_path, preset, "evaluate")
    for epoch, loss in enumerate([0.3, 0.2, float("nan")], 1):
        dsr.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 10, "train", {"loss": loss}))
    (evaluate.path / "eval.json").write_text(json.dumps({"dsr": {"rank1": 0.4}, "bicubic": {"rank1": 0.3}}))
    pipeline.write_summary({"status": "done", "stages": {"train-dsr": str(dsr.path),
                                                          "evaluate": evaluate.path.name, "finetune": None}})
    assert main(["tips", str(pipeline.path)]) == 0
    out = flat(capsys.readouterr().out)
    assert "dsr.grad_clip: 1.0 -> 0.5" in out          # from the train-dsr stage's NaN loss
    assert "Rank-1 of DSR + EdgeFace on the test identities is 40.0%" in out  # from the evaluate stage
    assert "lambda_identity: 0.6 -> 0.7" in out


def test_a_run_too_short_for_the_trend_rules_says_so(tmp_path, capsys):
    """Two healthy epochs fire no rule: that is "too early to tell", with the epochs the rules need."""
    from engine.tips import THRESHOLDS

    run = RunDir.create(tmp_path, load("vlr-32x32"), "train-dsr")
    for epoch in (1, 2):
        run.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 20, "train", {"loss": 0.5 / epoch}))
        run.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 20, "val", {"loss": 0.6 / epoch}))
    assert main(["tips", str(run.path)]) == 0
    out = flat(capsys.readouterr().out)
    assert "nothing in the metrics calls for a change" not in out
    assert "No tips yet. This run has 2 epochs of metrics (stage dsr), too few for the trend rules" in out
    assert f">= {THRESHOLDS.min_epochs_to_judge} epochs (DSR gain over bicubic, low val top-1)" in out
    assert f">= {THRESHOLDS.overfit_epochs + 1} epochs (loss spikes, overfitting)" in out
    assert f">= {THRESHOLDS.oscillation_window} epochs (oscillation)" in out
    assert main(["tips", str(run.path), "--apply", "1", "--save-as", "x"]) == 2
    assert "has no tips to apply yet. This run has 2 epochs" in flat(capsys.readouterr().err)


def test_a_long_enough_healthy_run_still_says_nothing_calls_for_a_change(tmp_path, capsys):
    from engine.tips import THRESHOLDS

    run = RunDir.create(tmp_path, load("vlr-32x32"), "train-dsr")
    for epoch in range(1, THRESHOLDS.oscillation_window + 1):
        run.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 20, "train", {"loss": 0.5 / epoch}))
        run.log_metrics(Metrics("train-dsr", "dsr", epoch, epoch * 20, "val", {"loss": 0.6 / epoch}))
    assert main(["tips", str(run.path)]) == 0
    out = flat(capsys.readouterr().out)
    assert "No tips: nothing in the metrics calls for a change." in out and "too few" not in out


def test_an_evaluation_alone_is_not_called_too_short(tmp_path, capsys):
    run = RunDir.create(tmp_path, load("vlr-32x32"), "evaluate")
    (run.path / "eval.json").write_text(json.dumps({"dsr": {"rank1": 0.95}, "bicubic": {"rank1": 0.9}}))
    assert main(["tips", str(run.path)]) == 0
    out = flat(capsys.readouterr().out)
    assert "No tips: nothing in the metrics calls for a change." in out and "too few" not in out
