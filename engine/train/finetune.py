"""EdgeFace fine-tuning (job ``finetune``): stage 1 trains the ArcFace head alone (backbone frozen,
``head_lr``), stage 2 trains everything (``backbone_lr``, ``head_lr_stage2``, cosine, early
stopping on val top-1). Inputs are the training VLR images super-resolved by the frozen DSR network
in whole batches on the device (bicubic upscaling when no DSR checkpoint is given), labels are
subject ids. The loop itself is ``recognition.ArcFaceTrainer``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from engine import distributed
from engine.data import to_float
from engine.data.resolve import job_data_root
from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Finished, Log
from engine.jobs.options import FinetuneOptions
from engine.jobs.registry import JobRequest, StopFlag
from engine.models.edgeface import load_edgeface
from engine.presets import Preset
from engine.jobs.recogniser import preset_weights, recogniser_weights
from engine.runtime import Runtime, configure_backends, prepare_model, resolve, seed_everything
from engine.train.bookkeeper import Bookkeeper, main_only
from engine.train.resume import check_resume_data, data_record, open_resume, resume_data_root
from engine.train.recognition import ArcFaceTrainer, InputFn, load_splits

JOB = "finetune"


def run_finetune(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    """Stage 1 (head only) then stage 2 (whole model) on DSR outputs of the training images."""
    opts: FinetuneOptions = request.options or FinetuneOptions()
    resume, opts, preset = open_resume(request, opts, JOB, emit)
    cfg = preset.finetune
    recorded = resume.checkpoint.get("epochs", {}) if resume else {}
    stage1 = int(_first(opts.stage1_epochs, recorded.get("stage1"), cfg.stage1_epochs))
    stage2 = int(_first(opts.stage2_epochs, recorded.get("stage2"), cfg.stage2_epochs))
    if stage1 + stage2 <= 0:
        raise WorkbenchError(f"nothing to train: stage 1 and stage 2 epochs are both 0 (preset {preset.name}: "
                             "finetune.stage1_epochs, finetune.stage2_epochs, or --stage1-epochs/--stage2-epochs). "
                             "Give at least one epoch (the guide: 5 and 25).")
    runtime = resolve(preset)
    ctx, device = distributed.setup(runtime.device)
    runtime = replace(runtime, device=device)
    configure_backends(runtime)
    generator = seed_everything(preset.runtime.seed)
    quiet_emit = main_only(emit, ctx)
    if not opts.edgeface and not resume:
        preset_weights(preset)        # a missing runtime.edgeface_weights stops it before any data is read
    data_root = job_data_root(preset, resume_data_root(resume, request.data), quiet_emit, JOB)
    train, val = load_splits(data_root, preset, runtime, quiet_emit, JOB)
    data = data_record(data_root, train)
    check_resume_data(resume, data, opts.allow_other_data)

    weights = (opts.edgeface or (resume and resume.checkpoint.get("edgeface_weights"))
               or recogniser_weights(preset, data_root, emit, stop, ctx,
                                     host=(opts.run_dir, JOB) if opts.run_dir else None))
    model = load_edgeface(weights).to(device)  # the file decides the architecture
    prepare_model(model, runtime, lambda m: quiet_emit(Log(JOB, m)), "EdgeFace")
    if ctx.is_main:
        emit(Log(JOB, f"EdgeFace {model.variant} from {weights}"))
    if model.variant != preset.runtime.edgeface_variant and ctx.is_main:
        emit(Log(JOB, f"{weights} holds {model.variant}, not the preset's runtime.edgeface_variant "
                      f"{preset.runtime.edgeface_variant}: fine-tuning {model.variant}", "warning"))
    dsr_path = opts.dsr or (resume.checkpoint.get("dsr") if resume else None) or None
    inputs, input_kind = vlr_inputs(dsr_path, preset, runtime, quiet_emit)

    book = Bookkeeper.open(JOB, preset, emit, stop, ctx, device, run_dir=opts.run_dir, resume=resume,
                           lr_keys="finetune.head_lr, backbone_lr or head_lr_stage2")
    with book.lifetime():
        trainer = ArcFaceTrainer(book, preset, runtime, model, train, val, "vlr", inputs, generator, resume)
        trainer.extra = {"input": input_kind, "edgeface_weights": str(weights), "dsr": str(dsr_path or ""),
                         "data": data, "epochs": {"stage1": stage1, "stage2": stage2}}
        if resume:
            book.log(f"resuming {book.run.path} in {book.state.stage or 'stage1'} at epoch {book.state.epoch + 1}, "
                     f"step {book.state.step_in_epoch + 1} with its own preset {preset.name!r}")
        try:
            trainer.run_stage("stage1", stage1, train_backbone=False, patience=0)
            trainer.run_stage("stage2", stage2, train_backbone=True, patience=cfg.early_stop_patience)
        except JobStopped:
            return trainer.finish(stopped=True)
        return trainer.finish(stopped=False)


def vlr_inputs(dsr_path: str | Path | None, preset: Preset, runtime: Runtime, emit: Emit) -> tuple[InputFn, str]:
    """The recogniser's inputs from VLR batches: frozen DSR outputs, or bicubic upscaling without DSR."""
    from engine.models.dsr import load_dsr, upscale_bicubic

    hr_size = preset.data.hr_size
    if not dsr_path:
        emit(Log(JOB, "no DSR checkpoint: fine-tuning on bicubic-upscaled VLR images (give one with --dsr, or "
                      "train DSR first and the app's fine-tune key uses it)", "warning"))
        return (lambda vlr: upscale_bicubic(to_float(vlr), hr_size)), "bicubic"
    dsr, _ = load_dsr(dsr_path, runtime.device)
    dsr.requires_grad_(False)
    prepare_model(dsr, runtime, lambda m: emit(Log(JOB, m)), "frozen DSR network")
    emit(Log(JOB, f"inputs: VLR images super-resolved by the frozen DSR network {dsr_path}"))
    return super_resolver(dsr, runtime), "dsr"


def super_resolver(dsr: torch.nn.Module, runtime: Runtime) -> InputFn:
    """uint8 VLR batches -> the frozen DSR network's outputs in [0, 1] (no grad, AMP, the preset's memory format)."""

    @torch.no_grad()
    def super_resolve(vlr: torch.Tensor) -> torch.Tensor:
        with runtime.autocast():
            return dsr(to_float(vlr).contiguous(memory_format=runtime.memory_format)).float().clamp_(0.0, 1.0)

    return super_resolve


def _first(*values):
    return next(v for v in values if v is not None)
