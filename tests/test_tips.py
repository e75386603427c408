"""Tuning tips: each rule fires on a synthetic history, stays quiet on a healthy one, and patches validate."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from engine.errors import WorkbenchError
from engine.events import Metrics
from engine.presets import Preset, load
from engine.runs.run_dir import RunDir
from engine.tips import (THRESHOLDS, Thresholds, apply_tip, check_targets, propose_tips, target_set_name,
                         tip_changes, tips_for_run)

PRESETS = ("vlr-32x32", "vlr-14x16", "cpu-demo")


def rec(stage: str, epoch: int, split: str, **values) -> dict:
    job = "train-dsr" if stage == "dsr" else "finetune"
    return {"job": job, "stage": stage, "epoch": epoch, "step": epoch * 10, "split": split, **values}


def healthy_dsr(epochs: int = 10) -> list[dict]:
    out = []
    for e in range(1, epochs + 1):
        out.append(rec("dsr", e, "train", loss=1.0 / e, l1=0.1 / e))
        out.append(rec("dsr", e, "val", loss=1.1 / e, psnr=22.0 + 0.8 * e, identity=0.3 / e, feature_match=0.2 / e,
                       l1=0.1 / e, ssim=0.5 + 0.03 * e))
    return out


def healthy_finetune() -> list[dict]:
    out = []
    for e in range(1, 4):
        out.append(rec("stage1", e, "train", loss=3.0 - 0.5 * e, top1=0.6 + 0.07 * e))
        out.append(rec("stage1", e, "val", loss=3.1 - 0.5 * e, top1=0.58 + 0.08 * e))
    for e in range(1, 9):
        out.append(rec("stage2", e, "train", loss=1.5 - 0.1 * e, top1=0.85 + 0.013 * e))
        out.append(rec("stage2", e, "val", loss=1.6 - 0.1 * e, top1=0.84 + 0.01 * e))
    return out


def healthy() -> list[dict]:
    return healthy_dsr() + healthy_finetune()


def rules_of(tips) -> list[str]:
    return [t.rule for t in tips]


@pytest.fixture(scope="module")
def presets() -> dict[str, Preset]:
    return {name: load(name) for name in PRESETS}


@pytest.mark.parametrize("name", PRESETS)
def test_healthy_history_proposes_nothing(presets, name):
    assert propose_tips(healthy(), presets[name]) == []
    assert propose_tips([], presets[name]) == []


def test_healthy_history_meets_every_32x32_target(presets):
    targets = check_targets(healthy(), presets["vlr-32x32"], {"dsr": {"rank1": 0.93}})
    assert [t.name for t in targets if not t.met] == []
    psnr = targets[0]
    assert psnr.name == "DSR val PSNR" and psnr.value == pytest.approx(30.0) and psnr.target == 28.0
    assert psnr.gap == pytest.approx(-2.0) and psnr.unit == "dB"


# -- low accuracy --------------------------------------------------------------------------------

def low_val_top1() -> list[dict]:
    return healthy_dsr() + [rec("stage2", e, "val", loss=2.0, top1=0.2 + 0.05 * e) for e in range(1, 5)]


def test_low_val_top1_proposes_the_guides_accuracy_fix(presets):
    tips = propose_tips(low_val_top1(), presets["vlr-32x32"])
    assert rules_of(tips) == ["low_accuracy"]
    tip = tips[0]
    assert tip.patch == {"dsr.lambda_identity": 0.70, "dsr.lambda_tv": 1e-6, "dsr.base_channels": 144}
    assert "40.0%" in tip.observed and "stage2" in tip.observed and "50.0%" in tip.observed
    assert "lambda_identity" in tip.fix and tip.why


def test_low_accuracy_waits_for_enough_epochs(presets):
    early = [rec("stage2", e, "val", top1=0.1) for e in range(1, THRESHOLDS.min_epochs_to_judge)]
    assert propose_tips(early, presets["vlr-32x32"]) == []


@pytest.mark.parametrize("rank1", [0.42, 42.0])
def test_low_eval_rank1_fires_and_names_the_baseline(presets, rank1):
    evaluation = {"dsr": {"rank1": rank1}, "bicubic": {"rank1": 0.30}, "hr": {"rank1": 0.95}}
    tips = propose_tips(healthy(), presets["vlr-32x32"], evaluation=evaluation)
    assert rules_of(tips) == ["low_accuracy"]
    assert "42.0%" in tips[0].observed and "bicubic baseline 30.0%" in tips[0].observed


def test_good_eval_rank1_overrides_low_val_top1(presets):
    assert propose_tips(low_val_top1(), presets["vlr-32x32"], evaluation={"dsr": {"rank1": 0.62}}) == []


def test_tip_already_applied_is_not_proposed(presets):
    fixed = presets["vlr-32x32"].with_changes({"dsr.lambda_identity": 0.8, "dsr.lambda_tv": 1e-6,
                                               "dsr.base_channels": 160})
    assert propose_tips(low_val_top1(), fixed) == []
    partly = presets["vlr-32x32"].with_changes({"dsr.lambda_tv": 1e-6})
    assert propose_tips(low_val_top1(), partly)[0].patch == {"dsr.lambda_identity": 0.70, "dsr.base_channels": 144}


# -- overfitting ---------------------------------------------------------------------------------

def diverging_dsr() -> list[dict]:
    out = healthy_dsr(6)
    for e, (train, val) in enumerate([(0.15, 0.20), (0.14, 0.22), (0.13, 0.25), (0.12, 0.29)], 7):
        out.append(rec("dsr", e, "train", loss=train))
        out.append(rec("dsr", e, "val", loss=val, psnr=27.0))
    return out


def test_val_loss_rising_while_train_falls_is_overfitting(presets):
    tips = propose_tips(diverging_dsr(), presets["vlr-32x32"])
    assert rules_of(tips) == ["overfitting"]
    assert tips[0].patch == {"dsr.weight_decay": 5e-5, "dsr.brightness": (0.9, 1.1), "dsr.contrast": (0.9, 1.1),
                             "dsr.saturation": (0.92, 1.08), "dsr.learning_rate": 1.0e-4}
    assert "0.2 -> 0.29" in tips[0].observed and "epochs 7-10" in tips[0].observed


def test_val_loss_rise_must_last_the_whole_window(presets):
    history = diverging_dsr()
    history[-1]["loss"] = 0.24  # val loss fell at the last step: only 2 rising steps of the 3 required
    assert propose_tips(history, presets["vlr-32x32"]) == []


def gap_history(train_top1: float, val_top1: float) -> list[dict]:
    out = healthy_finetune()
    out.append(rec("stage2", 9, "train", loss=0.5, top1=train_top1))
    out.append(rec("stage2", 9, "val", loss=0.6, top1=val_top1))
    return out


def test_train_val_accuracy_gap_is_overfitting(presets):
    tips = propose_tips(gap_history(0.98, 0.70), presets["vlr-32x32"])
    assert rules_of(tips) == ["overfitting"]
    assert tips[0].patch == {"finetune.weight_decay": 5e-5, "finetune.jitter_brightness": 0.1,
                             "finetune.jitter_contrast": 0.1, "finetune.jitter_saturation": 0.08,
                             "finetune.backbone_lr": 4e-6}
    assert "98.0%" in tips[0].observed and "70.0%" in tips[0].observed and "28.0 points" in tips[0].observed


def test_top1_gap_threshold_boundary_and_override(presets):
    limit = THRESHOLDS.overfit_top1_gap
    assert rules_of(propose_tips(gap_history(0.90, 0.90 - limit + 0.01), presets["vlr-32x32"])) == []
    assert rules_of(propose_tips(gap_history(0.90, 0.90 - limit - 0.01), presets["vlr-32x32"])) == ["overfitting"]
    lenient = dataclasses.replace(THRESHOLDS, overfit_top1_gap=0.5)
    assert propose_tips(gap_history(0.98, 0.70), presets["vlr-32x32"], thresholds=lenient) == []


def test_stronger_regularisation_is_never_weakened(presets):
    strong = presets["vlr-32x32"].with_changes({"finetune.weight_decay": 1e-4, "finetune.jitter_brightness": 0.2,
                                                "finetune.backbone_lr": 1e-6})
    patch = propose_tips(gap_history(0.98, 0.70), strong)[0].patch
    assert set(patch) == {"finetune.jitter_contrast", "finetune.jitter_saturation"}


# -- instability ---------------------------------------------------------------------------------

def test_nan_loss_proposes_the_instability_fix(presets):
    history = healthy_dsr()
    history.insert(6, rec("dsr", 4, "train", loss=None, l1=0.02))
    tips = propose_tips(history, presets["vlr-32x32"])
    assert rules_of(tips) == ["instability"]
    assert tips[0].patch == {"dsr.learning_rate": 1.0e-4, "dsr.warmup_epochs": 8, "dsr.grad_clip": 0.5}
    assert "loss (train) of stage dsr at epoch 4" in tips[0].observed


def test_float_nan_in_history_counts_too(presets):
    history = healthy_dsr() + [rec("dsr", 11, "val", loss=math.nan, psnr=30.0)]
    assert rules_of(propose_tips(history, presets["vlr-32x32"])) == ["instability"]


@pytest.mark.parametrize("factor, fires", [(THRESHOLDS.spike_factor * 1.05, True),
                                           (THRESHOLDS.spike_factor * 0.95, False)])
def test_loss_spike_over_the_recent_median(presets, factor, fires):
    history = [rec("stage2", e, "train", loss=1.0) for e in range(1, 6)]
    history.append(rec("stage2", 6, "train", loss=factor))
    tips = propose_tips(history, presets["vlr-32x32"])
    assert rules_of(tips) == (["instability"] if fires else [])
    if fires:
        assert f"{factor:.4g}" in tips[0].observed and "median 1" in tips[0].observed


def test_oscillating_val_metric_is_instability(presets):
    history = healthy_dsr(4)
    for e, psnr in enumerate([26.0, 28.0, 25.5, 28.5, 25.0, 28.0, 25.5], 5):
        history.append(rec("dsr", e, "val", psnr=psnr))
    tips = propose_tips(history, presets["vlr-32x32"])
    assert rules_of(tips) == ["instability"]
    assert "val psnr of stage dsr changed direction 5 times" in tips[0].observed


def test_small_wobble_is_not_oscillation(presets):
    history = healthy_dsr(4)
    for e, psnr in enumerate([26.0, 26.1, 26.05, 26.15, 26.1, 26.2, 26.15], 5):
        history.append(rec("dsr", e, "val", psnr=psnr))
    assert propose_tips(history, presets["vlr-32x32"]) == []


def test_gradient_clip_off_counts_as_unclipped(presets):
    history = [rec("dsr", 1, "train", loss=None)]
    off = presets["vlr-32x32"].with_changes({"dsr.grad_clip": 0.0, "dsr.learning_rate": 1e-4, "dsr.warmup_epochs": 8})
    assert propose_tips(history, off)[0].patch == {"dsr.grad_clip": 0.5}


# -- out of memory -------------------------------------------------------------------------------

def oom(stage: str) -> dict:
    return {"job": "x", "stage": stage, "epoch": 1, "split": "error",
            "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}


@pytest.mark.parametrize("stage, key, start, expected", [
    ("dsr", "dsr.batch_size", 14, 12),            # the guide's number
    ("dsr", "dsr.batch_size", 12, 9),             # already there: 3/4, rounded down
    ("stage2", "finetune.batch_size", 28, 24),
    ("stage1", "finetune.batch_size", 24, 18),
    ("dsr", "dsr.batch_size", 2, 1),
])
def test_oom_record_lowers_the_batch_of_its_stage(presets, stage, key, start, expected):
    preset = presets["vlr-32x32"].with_changes({key: start})
    tips = propose_tips([oom(stage)], preset)
    assert rules_of(tips) == ["out_of_memory"]
    assert tips[0].patch == {key: expected}
    assert "CUDA out of memory" in tips[0].observed


def test_oom_at_batch_one_has_nothing_to_propose(presets):
    assert propose_tips([oom("dsr")], presets["vlr-32x32"].with_changes({"dsr.batch_size": 1})) == []


def test_oom_flag_without_a_stage_lowers_both_batches(presets):
    tips = propose_tips([], presets["vlr-14x16"], oom=True)
    assert tips[0].patch == {"dsr.batch_size": 12, "finetune.batch_size": 24}
    assert rules_of(propose_tips([{"event": "oom"}], presets["cpu-demo"])) == ["out_of_memory"]


# -- all rules together, patches valid on every built-in preset ----------------------------------

def everything_wrong() -> list[dict]:
    history = diverging_dsr() + [rec("stage2", e, split, loss=1.0, top1=top1) for e in range(1, 5)
                                 for split, top1 in (("train", 0.45), ("val", 0.10))]
    history.insert(3, rec("dsr", 2, "train", loss=None))
    return history + [oom("stage2")]


@pytest.mark.parametrize("name", PRESETS)
def test_every_patch_gives_a_valid_preset(presets, name):
    preset = presets[name]
    tips = propose_tips(everything_wrong(), preset)
    assert rules_of(tips) == ["out_of_memory", "instability", "overfitting", "low_accuracy"]
    for tip in tips:
        patched = apply_tip(preset, tip)
        again = Preset.from_mapping(patched.to_mapping(), source="round trip")
        assert again == patched
        assert {key: again.get(key) for key in tip.patch} == tip.patch
        changes = tip_changes(preset, tip)
        assert [key for key, _, _ in changes] == sorted(tip.patch, key=list(preset.values()).index)
        assert all(old == preset.get(key) and new == tip.patch[key] for key, old, new in changes)


# -- targets -------------------------------------------------------------------------------------

def test_target_set_follows_the_vlr_size(presets):
    assert target_set_name(32, 32) == "32x32" and target_set_name(14, 16) == "14x16"
    assert target_set_name(16, 16) == "16x16" and target_set_name(24, 28) == "32x32"
    history = [rec("dsr", 1, "val", psnr=27.0, identity=0.13, feature_match=0.09, l1=0.045)]
    by_name = {n: {t.name: t for t in check_targets(history, presets[n])} for n in PRESETS}
    big, small = by_name["vlr-32x32"], by_name["vlr-14x16"]
    assert big["DSR val PSNR"].target == 28.0 and not big["DSR val PSNR"].met
    assert big["DSR val PSNR"].gap == pytest.approx(1.0)
    assert small["DSR val PSNR"].target == 26.0 and small["DSR val PSNR"].met
    assert small["DSR val PSNR"].gap == pytest.approx(-1.0)
    assert not big["DSR val identity loss"].met and small["DSR val identity loss"].met
    assert big["DSR val identity loss"].gap == pytest.approx(0.01)
    assert small["DSR val L1 loss"].target == 0.05 and by_name["cpu-demo"]["Stage 2 val accuracy"].target == 0.82


def test_targets_pick_best_last_and_eval_values(presets):
    history = [rec("stage1", 1, "val", top1=0.70), rec("stage1", 2, "val", top1=0.85),
               rec("stage2", 1, "val", top1=0.91), rec("stage2", 2, "val", top1=0.87)]
    targets = {t.name: t for t in check_targets(history, presets["vlr-32x32"])}
    assert targets["Stage 1 val accuracy"].value == 0.85 and targets["Stage 1 val accuracy"].met
    assert targets["Stage 2 val accuracy"].value == 0.91 and targets["Stage 2 val accuracy"].met
    final = targets["Final accuracy"]
    assert final.value == 0.87 and not final.met and final.gap == pytest.approx(0.03) and final.unit == "%"
    assert targets["DSR val PSNR"].value is None and targets["DSR val PSNR"].gap is None
    with_eval = check_targets(history, presets["vlr-32x32"], {"dsr": {"rank1": 0.64}})
    assert with_eval[-1].name == "Final accuracy (eval rank-1)" and with_eval[-1].value == 0.64


# -- run directories -----------------------------------------------------------------------------

def test_tips_for_run_reads_preset_metrics_and_eval(tmp_path, presets, capsys):
    run = RunDir.create(tmp_path, presets["vlr-14x16"], "pipeline")
    for e in range(1, 4):
        run.log_metrics(Metrics("pipeline", "stage2", e, e, "val", {"loss": 1.0, "top1": 0.3}))
    (run.path / "eval.json").write_text(json.dumps({"dsr": {"rank1": 0.7}, "bicubic": {"rank1": 0.5}}))
    preset, tips, targets = tips_for_run(run.path)
    assert preset.name == "vlr-14x16" and tips == []  # eval rank-1 70% outweighs the val top-1
    assert targets[-1].value == 0.7 and targets[-1].target == 0.85
    (run.path / "eval.json").unlink()
    assert rules_of(tips_for_run(run.path)[1]) == ["low_accuracy"]
    (run.path / "eval.json").write_text("{not json")      # damaged: read as absent, with a warning naming it
    assert rules_of(tips_for_run(run.path)[1]) == ["low_accuracy"]
    assert f"{run.path / 'eval.json'}: not JSON" in capsys.readouterr().err


def test_thresholds_live_in_one_frozen_dataclass():
    assert isinstance(THRESHOLDS, Thresholds)
    with pytest.raises(dataclasses.FrozenInstanceError):
        THRESHOLDS.low_accuracy = 0.1  # type: ignore[misc]
    assert (THRESHOLDS.low_accuracy, THRESHOLDS.oom_dsr_batch, THRESHOLDS.oom_finetune_batch) == (0.5, 12, 24)
