"""The tip rules: each reads the metric history and returns one ``Tip`` or ``None``.

Detection thresholds live in ``engine.tips.thresholds``; the fixes are the guide's numbers.
A rule whose patch would change nothing (the preset already has the fix) proposes nothing.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from engine.presets import Preset
from engine.tips.history import (DSR_STAGES, FINETUNE_STAGES, TRAINING_STAGES, Point, eval_rank1, non_finite,
                                 oom_records, series, stages)
from engine.tips.model import Change, Tip, build_patch, describe_fix
from engine.tips.thresholds import Thresholds

History = list[dict[str, Any]]


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _tip(rule: str, title: str, section: str, observed: list[str], why: str, preset: Preset,
         changes: list[Change]) -> Tip | None:
    if not observed:
        return None
    patch = build_patch(preset, changes)
    if not patch:
        return None
    return Tip(rule=rule, title=title, observed=" ".join(observed), fix=describe_fix(section, changes, patch),
               why=why, patch=patch)


# -- out of memory -----------------------------------------------------------------------------

def out_of_memory(history: History, preset: Preset, oom: bool, th: Thresholds) -> Tip | None:
    records = oom_records(history)
    if not records and not oom:
        return None
    hit = {r.get("stage") for r in records}
    known = hit & set(TRAINING_STAGES)
    changes = []
    if "dsr" in known or not known:
        changes.append(Change("dsr.batch_size", _next_batch(preset.dsr.batch_size, th.oom_dsr_batch, th), "down"))
    if known - {"dsr"} or not known:
        changes.append(Change("finetune.batch_size",
                              _next_batch(preset.finetune.batch_size, th.oom_finetune_batch, th), "down"))
    if records:
        first = records[0]
        message = str(first.get("error") or first.get("message") or "out of memory").strip().splitlines()[0]
        where = f"stage {first.get('stage', '?')}, epoch {first.get('epoch', '?')}"
        observed = [f"The run ran out of memory {len(records)} time(s) (first: {where}): \"{message[:120]}\"."]
    else:
        observed = ["The job failed with an out-of-memory error."]
    return _tip("out_of_memory", "Out of memory: smaller batches", "If OOM Occurs", observed,
                "Activation memory grows with the batch, and 32x32 inputs with 128x128 outputs need more per "
                "sample than 16x16 (the guide measured about 7.2 GB at DSR batch 14 and 7.4 GB at fine-tuning "
                "batch 28); a smaller batch fits, at the cost of noisier gradients.", preset, changes)


def _next_batch(current: int, guide_value: int, th: Thresholds) -> int:
    """The guide's batch when above it, else the next step down (3/4 rounded down, at least 1)."""
    if current > guide_value:
        return guide_value
    return max(1, math.floor(current * th.oom_step_down))


# -- instability -------------------------------------------------------------------------------

def instability(history: History, preset: Preset, th: Thresholds) -> Tip | None:
    observed = []
    bad = non_finite(history)
    if bad:
        shown = ", ".join(f"{key} ({split}) of stage {stage} at epoch {epoch}" for stage, split, epoch, key in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        observed.append(f"Non-finite losses (NaN or infinite): {shown}{more}.")
    for stage in stages(history):
        for split in ("train", "val"):
            spike = _worst_spike(series(history, stage, split, "loss"), th)
            if spike:
                point, median = spike
                observed.append(f"The {split} loss of stage {stage} jumped to {_num(point.value)} at epoch "
                                f"{point.epoch}, {point.value / median:.1f}x the median {_num(median)} of the "
                                f"epochs before (limit {th.spike_factor:g}x).")
        if stage in TRAINING_STAGES:
            metric = "psnr" if stage in DSR_STAGES else "top1"
            swing = _oscillation(series(history, stage, "val", metric), th)
            if swing:
                flips, steps, mean_step = swing
                observed.append(f"The val {metric} of stage {stage} changed direction {flips} times over its "
                                f"last {steps + 1} epochs (mean step {_num(mean_step)}).")
    return _tip("instability", "Unstable training: gentler optimisation", "If Training is Unstable", observed,
                "A lower peak learning rate and a longer warm-up keep the first updates small, and a tighter "
                "gradient clip bounds every step, so one bad batch cannot throw the weights into NaN.",
                preset, [Change("dsr.learning_rate", 1.0e-4, "down"), Change("dsr.warmup_epochs", 8, "up"),
                         Change("dsr.grad_clip", 0.5, "clip")])


def _worst_spike(points: list[Point], th: Thresholds) -> tuple[Point, float] | None:
    worst: tuple[float, Point, float] | None = None
    finite = [p for p in points if p.finite]
    for i, point in enumerate(finite):
        before = [p.value for p in finite[max(0, i - th.spike_window):i]]
        if len(before) < th.spike_min_history:
            continue
        median = statistics.median(before)
        if median > 0 and point.value > th.spike_factor * median:
            ratio = point.value / median
            if worst is None or ratio > worst[0]:
                worst = (ratio, point, median)
    return (worst[1], worst[2]) if worst else None


def _oscillation(points: list[Point], th: Thresholds) -> tuple[int, int, float] | None:
    values = [p.value for p in points if p.finite][-th.oscillation_window:]
    if len(values) < th.oscillation_window:
        return None
    steps = [b - a for a, b in zip(values, values[1:])]
    signs = [s > 0 for s in steps if s != 0]
    flips = sum(a != b for a, b in zip(signs, signs[1:]))
    mean_step = sum(abs(s) for s in steps) / len(steps)
    scale = sum(abs(v) for v in values) / len(values)
    if flips >= th.oscillation_min_flips and scale > 0 and mean_step >= th.oscillation_min_swing * scale:
        return flips, len(steps), mean_step
    return None


# -- DSR against bicubic -----------------------------------------------------------------------

_GENTLER = (Change("dsr.learning_rate", 1.0e-4, "down"), Change("dsr.warmup_epochs", 8, "up"),
            Change("dsr.grad_clip", 0.5, "clip"))


def dsr_vs_bicubic(history: History, preset: Preset, th: Thresholds) -> Tip | None:
    """The first thing to look at: a DSR whose val PSNR is under (or no better than) bicubic upscaling."""
    psnr = [p for p in series(history, "dsr", "val", "psnr") if p.finite]
    bicubic = [p for p in series(history, "dsr", "val", "bicubic_psnr") if p.finite]
    if not psnr or not bicubic:
        return None
    best = max(psnr, key=lambda p: p.value)
    reference = bicubic[-1].value
    lr = _num(preset.dsr.learning_rate)
    if best.value < reference - th.psnr_below_bicubic:
        return _tip("dsr_below_bicubic", "DSR worse than bicubic: lower the learning rate",
                    "If Training is Unstable",
                    [f"The best DSR val PSNR is {best.value:.2f} dB (epoch {best.epoch}), {reference - best.value:.2f} "
                     f"dB under the bicubic baseline {reference:.2f} dB, with dsr.learning_rate {lr}."],
                    "A DSR that reconstructs worse than plain bicubic upscaling is not learning: the usual cause "
                    "is a learning rate so high that the first updates wreck the weights. The guide's lower rate, "
                    "a longer warm-up and a tighter clip keep the steps small.", preset, list(_GENTLER))
    if len(psnr) >= th.min_epochs_to_judge and best.value - reference < th.min_psnr_gain:
        return _tip("dsr_no_gain", "DSR no better than bicubic: gentler learning rate, train longer",
                    "If Training is Unstable",
                    [f"The best DSR val PSNR is {best.value:.2f} dB (epoch {best.epoch}) after {len(psnr)} val epochs, "
                     f"{best.value - reference:+.2f} dB against the bicubic baseline {reference:.2f} dB "
                     f"(at least {th.min_psnr_gain:g} dB above it is expected), with dsr.learning_rate {lr}."],
                    "A DSR stuck at the bicubic PSNR has learned to pass its input through: steps too large "
                    "keep it there, and too few epochs never leave it. A gentler rate and more epochs let the "
                    "residual branch learn detail.", preset,
                    [*_GENTLER, Change("dsr.epochs", max(2 * preset.dsr.epochs, 20), "up")])
    return None


# -- overfitting -------------------------------------------------------------------------------

def overfitting(history: History, preset: Preset, th: Thresholds) -> Tip | None:
    observed, families = [], set()
    for stage in (*DSR_STAGES, *FINETUNE_STAGES):
        found = _diverging_losses(history, stage, th)
        if stage in FINETUNE_STAGES:
            found += _top1_gap(history, stage, th)
        if found:
            observed += found
            families.add("dsr" if stage in DSR_STAGES else "finetune")
    changes = []
    if "dsr" in families:
        changes += [Change("dsr.weight_decay", 5e-5, "up"), Change("dsr.brightness", (0.9, 1.1), "widen"),
                    Change("dsr.contrast", (0.9, 1.1), "widen"), Change("dsr.saturation", (0.92, 1.08), "widen"),
                    Change("dsr.learning_rate", 1.0e-4, "down")]
    if "finetune" in families:
        changes += [Change("finetune.weight_decay", 5e-5, "up"), Change("finetune.jitter_brightness", 0.1, "up"),
                    Change("finetune.jitter_contrast", 0.1, "up"), Change("finetune.jitter_saturation", 0.08, "up"),
                    Change("finetune.backbone_lr", 4e-6, "down")]
    return _tip("overfitting", "Overfitting: more regularisation, smaller steps", "If Overfitting Occurs", observed,
                "The model is memorising the training identities: stronger weight decay and colour jitter "
                "regularise it, and lower learning rates let it fit the shared structure rather than the "
                "individual images.", preset, changes)


def _diverging_losses(history: History, stage: str, th: Thresholds) -> list[str]:
    train = {p.epoch: p.value for p in series(history, stage, "train", "loss") if p.finite}
    val = {p.epoch: p.value for p in series(history, stage, "val", "loss") if p.finite}
    epochs = sorted(train.keys() & val.keys())[-(th.overfit_epochs + 1):]
    if len(epochs) < th.overfit_epochs + 1:
        return []
    v = [val[e] for e in epochs]
    t = [train[e] for e in epochs]
    rising = all(b > a for a, b in zip(v, v[1:])) and v[-1] - v[0] >= th.overfit_min_val_rise * abs(v[0])
    if rising and t[-1] < t[0]:
        return [f"Stage {stage}: the val loss rose {_num(v[0])} -> {_num(v[-1])} over epochs {epochs[0]}-"
                f"{epochs[-1]} while the train loss fell {_num(t[0])} -> {_num(t[-1])}."]
    return []


def _top1_gap(history: History, stage: str, th: Thresholds) -> list[str]:
    train = {p.epoch: p.value for p in series(history, stage, "train", "top1") if p.finite}
    val = {p.epoch: p.value for p in series(history, stage, "val", "top1") if p.finite}
    common = sorted(train.keys() & val.keys())
    if not common:
        return []
    epoch = common[-1]
    gap = train[epoch] - val[epoch]
    if gap >= th.overfit_top1_gap:
        return [f"Stage {stage}: train top-1 {_pct(train[epoch])} vs val top-1 {_pct(val[epoch])} at epoch {epoch} "
                f"(a gap of {100 * gap:.1f} points; limit {100 * th.overfit_top1_gap:.0f})."]
    return []


# -- low accuracy ------------------------------------------------------------------------------

def low_accuracy(history: History, preset: Preset, evaluation: dict | None, th: Thresholds) -> Tip | None:
    observed = []
    rank1 = eval_rank1(evaluation, "dsr")
    if rank1 is not None:
        if rank1 < th.low_accuracy:
            bicubic = eval_rank1(evaluation, "bicubic")
            baseline = f" (bicubic baseline {_pct(bicubic)})" if bicubic is not None else ""
            observed.append(f"Rank-1 of DSR + EdgeFace on the test identities is {_pct(rank1)}{baseline}, "
                            f"below {_pct(th.low_accuracy)}.")
    else:
        for stage in reversed(FINETUNE_STAGES):
            points = [p for p in series(history, stage, "val", "top1") if p.finite]
            if len(points) >= th.min_epochs_to_judge:
                best = max(points, key=lambda p: p.value)
                if best.value < th.low_accuracy:
                    observed.append(f"The best val top-1 of {stage} is {_pct(best.value)} (epoch {best.epoch}, "
                                    f"{len(points)} val epochs), below {_pct(th.low_accuracy)}.")
                break
    return _tip("low_accuracy", "Accuracy too low: sharper, identity-preserving DSR", "If Accuracy is Too Low (<50%)",
                observed, "A heavier identity loss makes DSR keep what the recogniser uses, less total-variation "
                "smoothing allows sharper facial detail, and more channels give the network the capacity for it.",
                preset, [Change("dsr.lambda_identity", 0.70, "up"), Change("dsr.lambda_tv", 1e-6, "down"),
                         Change("dsr.base_channels", 144, "up")])


# -- camera-like probes ------------------------------------------------------------------------

CAMERA_PROTOCOLS = ("same camera", "unseen camera")


def camera(history: History, preset: Preset, evaluation: dict | None, th: Thresholds) -> Tip | None:
    """DSR reconstructs its val images well but the camera probes are not recognised: anchor the recogniser to its
    HR teacher, AdaFace; for an unseen camera also train through cameras on the fly, wider ones."""
    protocol = (evaluation or {}).get("protocol", {}).get("camera", {})   # as records.read_evaluation reads it
    name = protocol.get("protocol")
    rank1, hr = eval_rank1(evaluation, "dsr"), eval_rank1(evaluation, "hr")
    psnr = [p for p in series(history, "dsr", "val", "psnr") if p.finite]
    bicubic = [p for p in series(history, "dsr", "val", "bicubic_psnr") if p.finite]
    if name not in CAMERA_PROTOCOLS or rank1 is None or not psnr or not bicubic:
        return None
    best = max(psnr, key=lambda p: p.value)
    gain = best.value - bicubic[-1].value
    gap = (hr - rank1) if hr is not None else None
    if gain < th.min_psnr_gain or not (rank1 < th.low_accuracy or (gap is not None and gap > th.camera_rank1_gap)):
        return None
    probes = protocol.get("probes") or protocol.get("dataset") or "?"
    observed = [f"DSR's best val PSNR (epoch {best.epoch}) is {gain:+.2f} dB over bicubic, yet on the {name} probes "
                f"({probes}) DSR + EdgeFace "
                f"reaches {_pct(rank1)} rank-1" + (f", {100 * gap:.1f} points under HR probes" if gap is not None else "")
                + "."]
    changes = [Change("finetune.lambda_distill", 0.5, "up"), Change("finetune.head", "adaface", "set")]
    if name == "unseen camera":       # train for more cameras than the one it knows (a same-camera dataset
        # already trains on the probes' camera: replacing it by [degrade]'s would move training away from it).
        # No distillation there: in the unseen-camera lever study it lifted bicubic as much as DSR and cost DSR
        # 1.5 rank-1 points (README, Camera-like faces)
        changes = [Change("degrade.enabled", True, "set"), Change("finetune.head", "adaface", "set"),
                   Change("degrade.blur_sigma", (0.2, 2.0), "widen"), Change("degrade.noise_sigma", (1.0, 12.0), "widen"),
                   Change("degrade.jpeg_quality", (30.0, 90.0), "widen"), Change("degrade.motion_p", 0.3, "up")]
    return _tip("camera", "Faces from a camera: train through the camera, anchor the recogniser to HR",
                "Faces as cameras make them (issue 34)", observed,
                "Val PSNR measures the faces DSR was trained on; probes blurred, noisy or compressed otherwise are "
                "out of its distribution and of the recogniser's. Degrading the training faces on the fly (for the "
                "bicubic rows alike), distilling the fine-tuned recogniser towards the frozen HR recogniser's "
                "embedding of the same face, and AdaFace's quality-adaptive margin are the field's levers for it "
                "(measured here on an unseen camera, the distillation lifted bicubic as much as DSR: it is proposed "
                "for a same-camera dataset only).",
                preset, changes)
