"""The train-dsr job end to end on tiny generated demo faces (VLR 8x8 -> HR 32 keeps CPU time low)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import presets
from engine.events import Failed, Finished, Metrics, Progress, Samples
from engine.jobs.registry import JobRequest, StopFlag, run_job
from engine.models.dsr import load_dsr
from engine.models.edgeface import build_edgeface, edgeface_checkpoint
from engine.runs.records import read_metrics
from workbench.cli.main import main
from tiny import tiny_dsr_data, tiny_dsr_preset



@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """12 identities x 6 demo faces, VLR 8x8, HR 32: 45 train and 9 val images."""
    return tiny_dsr_data(tmp_path_factory.mktemp("dsr8") / "data", identities=12, per_identity=6)


@pytest.fixture
def tiny_preset(tmp_path):
    """cpu-demo scaled down to a seconds-long run, recogniser losses off."""
    return tiny_dsr_preset(tmp_path / "runs", **{"dsr.base_channels": 16, "dsr.residual_blocks": 2,
                                                 "dsr.learning_rate": 2e-3, "dsr.warmup_epochs": 1,
                                                 "dsr.ema_decay": 0.9})


def _collect():
    events = []
    return events, events.append


def test_cli_training_beats_bicubic_and_writes_the_run_directory(tiny_root, tiny_preset, tmp_path, capsys):
    preset_file = presets.save(tiny_preset, tmp_path / "tiny.toml")
    run_dir = tmp_path / "run"
    code = main(["train-dsr", "--preset", str(preset_file), "--data", str(tiny_root), "--epochs", "6",
                 "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "train-dsr summary" in out and "best_val_psnr" in out

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_val_psnr"] > summary["bicubic_val_psnr"] + 0.2  # learned more than bicubic gives
    assert summary["epochs_run"] == 6 and 1 <= summary["best_epoch"] <= 6
    assert summary["images_per_second"] > 0 and summary["parameters"] > 0

    assert presets.load(run_dir / "preset.toml").values() == tiny_preset.values()
    records = read_metrics(run_dir)
    for split in ("train", "val"):
        lines = [r for r in records if r["split"] == split]
        assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5, 6]
        assert all(r["job"] == "train-dsr" and r["stage"] == "dsr" and r["step"] > 0 for r in lines)
    val = [r for r in records if r["split"] == "val"]
    assert {"loss", "l1", "tv", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(val[0])
    assert {"loss", "l1", "lr", "images_per_second"} <= set(records[0])
    assert max(r["psnr"] for r in val) == pytest.approx(summary["best_val_psnr"])

    model, best = load_dsr(run_dir / "best.pt")
    assert best["kind"] == "dsr" and best["epoch"] == summary["best_epoch"]
    assert best["config"] == {"vlr_size": [8, 8], "hr_size": 32, "base_channels": 16, "residual_blocks": 2}
    assert best["val_psnr"] == pytest.approx(summary["best_val_psnr"])
    last = torch.load(run_dir / "last.pt", weights_only=False)
    assert last["epoch"] == 6 and {"optimizer", "scheduler", "ema", "rng", "model"} <= set(last)

    strips = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert strips == [f"epoch_{e:03d}.png" for e in range(1, 7)]
    with Image.open(run_dir / "samples" / "epoch_006.png") as strip:  # 4 rows x (VLR | bicubic | SR | HR)
        assert strip.size == (4 * 32 + 5 * 2, 4 * 32 + 5 * 2)


def _state(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=False)


def test_resume_continues_at_the_next_epoch_with_the_same_state(tiny_root, tiny_preset, tmp_path):
    straight = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root),
                                  {"epochs": 2, "run_dir": str(tmp_path / "straight")}), lambda e: None)
    first = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root),
                               {"epochs": 1, "run_dir": str(tmp_path / "split")}), lambda e: None)
    assert isinstance(straight, Finished) and isinstance(first, Finished)
    events, emit = _collect()
    other = tiny_preset.with_changes({"dsr.learning_rate": 0.5})  # ignored: a resume uses the run's preset.toml
    resumed = run_job(JobRequest("train-dsr", other, str(tiny_root),
                                 {"epochs": 2, "resume": str(tmp_path / "split")}), emit)
    assert isinstance(resumed, Finished) and resumed.run_dir == tmp_path / "split"
    assert {e.epoch for e in events if isinstance(e, Progress)} == {2}

    a, b = _state(tmp_path / "straight"), _state(tmp_path / "split")
    assert b["epoch"] == 2 and b["loop"]["global_step"] == a["loop"]["global_step"]
    for key in ("model", "state_dict"):  # raw weights and EMA weights
        for name in a[key]:
            assert torch.allclose(a[key][name], b[key][name], atol=1e-6), (key, name)
    for name, value in a["ema"].items():
        assert torch.allclose(value, b["ema"][name], atol=1e-6)
    moments_a, moments_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.allclose(moments_a[i]["exp_avg_sq"], moments_b[i]["exp_avg_sq"], atol=1e-9) for i in moments_a)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    epochs = [(r["split"], r["epoch"]) for r in read_metrics(tmp_path / "split")]
    assert epochs == [("train", 1), ("val", 1), ("train", 2), ("val", 2)]


def test_stop_flag_saves_a_resumable_checkpoint(tiny_root, tiny_preset, tmp_path):
    stop = StopFlag()
    events = []

    def emit(event):
        events.append(event)
        if isinstance(event, Progress) and event.stage == "dsr":
            stop.set()

    result = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root), {"epochs": 3}), emit, stop)
    assert isinstance(result, Finished) and result.stopped
    last = _state(result.run_dir)
    assert last["epoch"] == 0 and last["loop"]["global_step"] >= 1
    assert json.loads((result.run_dir / "summary.json").read_text())["stopped"] is True
    assert not (result.run_dir / "best.pt").exists()
    resumed = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root), {"epochs": 1, "resume": str(result.run_dir)}),
                      lambda e: None)
    assert isinstance(resumed, Finished) and not resumed.stopped
    assert _state(result.run_dir)["epoch"] == 1 and (result.run_dir / "best.pt").is_file()


def test_recogniser_losses_train_through_a_frozen_edgeface(tiny_root, tiny_preset, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "edgeface.pt"
    torch.save(edgeface_checkpoint(build_edgeface("edgeface_xxs")), weights)
    preset = tiny_preset.with_changes({"dsr.lambda_identity": 0.6, "dsr.lambda_feature_match": 0.18,
                                       "dsr.lambda_perceptual": 0.025, "dsr.perceptual_network": "edgeface",
                                       "dsr.batch_size": 16})
    events, emit = _collect()
    result = run_job(JobRequest("train-dsr", preset, str(tiny_root), {"epochs": 1, "edgeface": str(weights)}), emit)
    assert isinstance(result, Finished), result
    val = [e for e in events if isinstance(e, Metrics) and e.split == "val"][0].values
    train = [e for e in events if isinstance(e, Metrics) and e.split == "train"][0].values
    for values in (val, train):
        assert all(math.isfinite(values[k]) and values[k] > 0 for k in ("identity", "feature_match", "perceptual"))
    expected = sum(w * val[k] for w, k in ((1.0, "l1"), (0.6, "identity"), (0.18, "feature_match"),
                                            (0.025, "perceptual"), (2e-6, "tv")))
    assert val["loss"] == pytest.approx(expected, rel=1e-4)
    assert [e.epoch for e in events if isinstance(e, Samples)] == [1]
    assert _state(result.run_dir)["recogniser"] == str(weights)  # a --resume keeps the same critic


def test_missing_vgg_weights_stop_the_run_before_any_data_work(tiny_preset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    preset = tiny_preset.with_changes({"dsr.lambda_perceptual": 0.025, "dsr.perceptual_network": "vgg19"})
    preset_file = presets.save(preset, tmp_path / "vgg.toml")
    code = main(["train-dsr", "--preset", str(preset_file), "--data", str(tmp_path / "no-such-data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "vgg19-dcbbb69f.pth" in err and "no-such-data" not in err
    assert not (tmp_path / "runs").exists()


def test_resume_of_a_directory_without_last_pt_is_a_user_error(tiny_preset, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train-dsr", "--resume", str(tmp_path / "empty")])
    assert code == 2 and "preset.toml" in capsys.readouterr().err


def test_early_stopping_after_patience_epochs_without_a_better_psnr(tiny_root, tiny_preset, monkeypatch):
    import engine.train.dsr as dsr_trainer

    real_validate = dsr_trainer.validate
    scores = iter([20.0, 21.0, 20.5, 20.9, 25.0, 26.0])  # best at epoch 2, then two epochs without a better one

    def scripted_validate(*args, **kwargs):
        values = real_validate(*args, **kwargs)
        values["psnr"] = next(scores)
        return values

    monkeypatch.setattr(dsr_trainer, "validate", scripted_validate)
    preset = tiny_preset.with_changes({"dsr.early_stop_patience": 2, "data.cache_on_device": False})
    result = run_job(JobRequest("train-dsr", preset, str(tiny_root), {"epochs": 6}), lambda e: None)
    assert isinstance(result, Finished) and not result.stopped
    assert result.summary["early_stopped"] is True
    assert result.summary["epochs_run"] == 4 and result.summary["best_epoch"] == 2
    assert result.summary["best_val_psnr"] == 21.0
    assert torch.load(result.run_dir / "best.pt", weights_only=False)["epoch"] == 2


def test_non_finite_validation_is_reported_as_divergence(tiny_root, tiny_preset, monkeypatch):
    import engine.train.dsr as dsr_trainer

    real_validate = dsr_trainer.validate

    def diverged(*args, **kwargs):
        return dict(real_validate(*args, **kwargs), loss=float("nan"))

    monkeypatch.setattr(dsr_trainer, "validate", diverged)
    result = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root), {"epochs": 2}), lambda e: None)
    assert isinstance(result, Failed) and result.traceback is None
    assert "diverged at epoch 1" in result.error and "dsr.learning_rate" in result.error


def test_out_of_memory_is_recorded_and_the_tips_propose_the_guides_batch(tiny_root, tiny_preset, monkeypatch):
    """A CUDA OOM (simulated) ends the job with the fix, and `tips` reads it back from metrics.jsonl."""
    from engine.models.dsr import DSRNet
    from engine.tips import tips_for_run

    def exhausted(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DSRNet, "forward", exhausted)
    preset = tiny_preset.with_changes({"dsr.batch_size": 14})
    events, emit = _collect()
    result = run_job(JobRequest("train-dsr", preset, str(tiny_root)), emit)
    assert isinstance(result, Failed) and result.traceback is None
    assert "dsr.batch_size = 14" in result.error and "12" in result.error
    (run_dir,) = Path(preset.runtime.runs_dir).iterdir()
    errors = [r for r in read_metrics(run_dir) if r["split"] == "error"]
    assert len(errors) == 1 and "out of memory" in errors[0]["error"] and errors[0]["stage"] == "dsr"
    _, tips, _ = tips_for_run(run_dir)
    oom = [t for t in tips if t.rule == "out_of_memory"]
    assert oom and oom[0].patch["dsr.batch_size"] == 12


def test_resume_of_a_finished_run_says_it_is_finished_and_leaves_the_run_as_it_was(tiny_root, tiny_preset, tmp_path):
    run_dir = tmp_path / "done"
    first = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root), {"epochs": 1, "run_dir": str(run_dir)}),
                    lambda e: None)
    assert isinstance(first, Finished)
    before = {name: (run_dir / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "status.json")}
    again = run_job(JobRequest("train-dsr", tiny_preset, str(tiny_root), {"resume": str(run_dir)}), lambda e: None)
    assert isinstance(again, Failed) and "is finished" in again.error and "--epochs" in again.error
    assert again.traceback is None
    assert {name: (run_dir / name).read_bytes() for name in before} == before
