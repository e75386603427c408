"""DSR training: the job ``train-dsr`` (``run_train_dsr``), readable top to bottom.

Setup: preset (the run's own on --resume) -> VGG19 weights check (fails at once) -> processes
(torchrun: one rank per device) -> data (uint8 cache) -> frozen recogniser when a loss needs it ->
run directory -> ``build_training``: network (DDP across ranks), fused AdamW, per-step warm-up +
cosine, EMA, GradScaler. Each epoch: the epoch's sample order, each rank's slice of every global
batch -> ``DSRTraining.step`` (paired augmentation on the device, AMP forward and loss, clipped
update skipped on the device when non-finite, EMA; no host sync); then validation of the EMA
weights (PSNR/SSIM beside bicubic, loss terms), best.pt by val PSNR, a sample strip, last.pt
(resumable at the exact step), early stopping.
The epoch loop is ``engine.train.loop.fit`` (``DSRTrainer`` is what it calls); the run directory, status,
stop requests and checkpoints belong to ``bookkeeper.Bookkeeper``.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from engine import distributed
from engine.io import atomic
from engine.data.augment import PairedAugment
from engine.data.camera import Camera, camera_from_config, degrade, spec_text
from engine.data.camera.splits import camera_split
from engine.data import PairedSplit, load_split, to_float
from engine.data.layout import UNLABELLED, has_split
from engine.data.pairs import load_dsr_train
from engine.data.resolve import job_data_root
from engine.distributed import Context
from engine.errors import JobStopped, WeightsError, WorkbenchError
from engine.events import Emit, Finished, Log, Samples
from engine.jobs.options import DSROptions
from engine.jobs.registry import JobRequest, StopFlag
from engine.losses.combined import DSRCriterion, LossWeights, build_criterion
from engine.losses.perceptual import load_vgg19
from engine.metrics.image import psnr, ssim
from engine.models.dsr import DSRNet, count_trainable_parameters, upscale_bicubic
from engine.presets import Preset
from engine.jobs.recogniser import load_frozen_recogniser, preset_weights, recogniser_weights
from engine.data.placement import BatchFeeder, estimate_job_bytes, place_splits
from engine.runs.status import run_state
from engine.runtime import (Runtime, configure_backends, fused_adamw_kwargs, prepare_model, resolve,
                            seed_everything)
from engine.train.bookkeeper import Bookkeeper, main_only
from engine.train.loop_state import Sums
from engine.train.resume import check_resume_data, data_record, open_resume, restore_rng, resume_data_root
from engine.train.loop import Stage, fit
from engine.train.schedule import warmup_cosine
from engine.train.update import NonFiniteCount, OptimizerUpdate, StepResult

JOB = "train-dsr"
STAGE = "dsr"
SAMPLE_ROWS = 4          # validation images shown in each samples/epoch_NNN.png
EMA_WARMUP_POWER = 0.75  # timm's EMA warm-up: decay ramps up over the first steps (short runs stay usable)


def run_train_dsr(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    opts: DSROptions = request.options or DSROptions()
    resume, opts, preset = open_resume(request, opts, JOB, emit)
    cfg = preset.dsr
    epochs = int(opts.epochs or (resume.checkpoint["epochs"] if resume else cfg.epochs))
    if resume and resume.state.epoch >= epochs and run_state(resume.run.path) == "finished":
        raise WorkbenchError(f"{resume.run.path} is finished: it trained {resume.state.epoch} of {epochs} epochs, so "
                             f"there is nothing to resume. Give --epochs N with N > {resume.state.epoch} to train it "
                             "further, or start a new run without --resume.")
    weights = LossWeights.from_config(cfg)
    vgg = load_vgg19(cfg.vgg19_weights) if weights.needs_vgg else None  # a missing file stops the run here
    if weights.needs_recogniser and not opts.edgeface and not resume:
        preset_weights(preset)            # so does a missing runtime.edgeface_weights (before any data is read)
    warm = None if resume else read_warm_start(preset)   # and a missing or mismatched dsr.init_weights

    runtime = resolve(preset)
    ctx, device = distributed.setup(runtime.device)
    configure_backends(runtime)   # cuDNN autotuning, TF32 on CUDA
    say = main_only(emit, ctx)
    log = lambda message: say(Log(JOB, message))  # noqa: E731
    generator = seed_everything(preset.runtime.seed)
    data_root = job_data_root(preset, resume_data_root(resume, request.data), say, JOB)
    train, val = (_load(data_root, split, preset, log) for split in ("train", "val"))
    camera = camera_from_config(preset.degrade)
    if camera is not None:          # validation through the same camera, the same images every epoch
        val = camera_split(val, camera, preset.runtime.seed, "val")
        log(f"camera ([degrade]): training VLR images made from HR on the fly, afresh every step: {camera.to_spec()}; "
            "val VLR images made once with it (seeded per image)")
    # the uint8 cache on the GPU when it fits beside the job, else pinned host memory and async copies
    (train, val), _ = place_splits([train, val], device, job_bytes=estimate_job_bytes(cfg.batch_size),
                                   on_device=preset.data.cache_on_device, log=log)
    feeder = BatchFeeder(device)
    for split in (train, val):
        distributed.check_split_size(len(split), split.split, ctx)
    data = data_record(data_root, train)
    check_resume_data(resume, data, opts.allow_other_data)

    recogniser_path = None
    if weights.needs_recogniser:
        recogniser_path = (opts.edgeface or (resume and resume.checkpoint.get("recogniser"))
                           or recogniser_weights(preset, data_root, emit, stop, ctx,
                                                 host=(opts.run_dir, JOB) if opts.run_dir else None))
    recogniser = load_frozen_recogniser(recogniser_path, emit, JOB) if recogniser_path else None
    criterion = prepare_model(build_criterion(cfg, recogniser, device, vgg=vgg), runtime, log,
                              "frozen recogniser and losses")

    global_batch = cfg.batch_size * ctx.world_size       # the preset's batch size is per rank
    steps_per_epoch = math.ceil(len(train) / global_batch)
    book = Bookkeeper.open(JOB, preset, emit, stop, ctx, device, run_dir=opts.run_dir, resume=resume,
                           lr_keys="dsr.learning_rate")
    with book.lifetime():
        training = build_training(preset, runtime, criterion, feeder, book.nonfinite, ctx, log,
                                  warmup_steps=cfg.warmup_epochs * steps_per_epoch,
                                  total_steps=epochs * steps_per_epoch)
        init = warm.apply(training, book.log) if warm else (resume and resume.checkpoint.get("init_weights"))
        if resume:
            _restore(resume.checkpoint, training, generator)
            book.log(f"resuming {book.run.path} at epoch {book.state.epoch + 1}/{epochs}, step "
                     f"{book.state.step_in_epoch + 1} with its own preset {preset.name!r} (preset.toml of the run)")
        parameters = count_trainable_parameters(training.model)
        book.log(f"DSR {preset.vlr_size[0]}x{preset.vlr_size[1]} -> {preset.data.hr_size}: {parameters:,} parameters, "
                 f"x{training.model.factor} pixel shuffle; {len(train)} train / {len(val)} val images on {device} "
                 f"(AMP {runtime.amp_dtype or 'off'}); {ctx.world_size} process(es), global batch {global_batch}; "
                 f"run directory {book.run.path}")
        trainer = DSRTrainer(book, training, preset, train, val, bicubic_reference(val, device, cfg.batch_size),
                             {"epochs": epochs, "data": data,
                              "recogniser": str(recogniser_path) if recogniser_path else None,
                              "init_weights": init or None})
        stage = Stage(STAGE, epochs, len(train), cfg.batch_size, "dsr.batch_size", preset.runtime.seed,
                      cfg.early_stop_patience, "dsr.early_stop_patience", "val PSNR")
        try:
            result = fit(book, trainer, stage, generator)
        except JobStopped:
            return book.finish(_summary(book, parameters, runtime, global_batch, stopped=True, early_stopped=False,
                                        init_weights=init or None, camera=camera), stopped=True)
        return book.finish(_summary(book, parameters, runtime, global_batch, stopped=False,
                                    early_stopped=result.early_stopped, init_weights=init or None,
                                    camera=camera),
                           stopped=False)


@dataclass
class DSRTrainer:
    """What the epoch loop (``engine.train.loop.fit``) needs of DSR training: the step, validation of the
    EMA weights (PSNR/SSIM beside bicubic), the score (val PSNR), checkpoints and the sample strip."""
    book: Bookkeeper
    training: "DSRTraining"
    preset: Preset
    train: PairedSplit
    val: PairedSplit
    reference: dict[str, float]       # bicubic PSNR/SSIM of the val split: the same every epoch
    record: dict[str, Any]            # kept in last.pt: epochs, data, recogniser

    @property
    def eval_model(self) -> torch.nn.Module:
        """Validated and saved: the EMA weights when EMA is on."""
        training = self.training
        return training.ema.module if training.ema is not None else training.model

    def train_mode(self) -> None:
        self.training.net.train()

    def step(self, index: torch.Tensor, generator: torch.Generator) -> StepResult:
        return self.training.step(self.train, index, generator, self.book.state.global_step)

    def learning_rate(self) -> float:
        return self.training.scheduler.get_last_lr()[0]

    def validate(self) -> dict[str, float]:
        values = validate(self.eval_model, self.val, self.training.criterion, self.training.runtime,
                          self.preset.dsr.batch_size, self.book.ctx)
        return {**values, **self.reference}

    def check_validation(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        if math.isfinite(values["loss"]) and math.isfinite(values["psnr"]):
            return
        last = self.book.run.path / "last.pt"
        raise WorkbenchError(
            f"DSR training diverged at epoch {epoch} (val loss {values['loss']}). Lower "
            "dsr.learning_rate (e.g. halve it) and keep dsr.grad_clip at 1.0"
            + (", or set runtime.amp = \"bf16\" or \"off\" instead of fp16" if self.training.scaler.is_enabled() else "")
            + "; then start again" + (f" or resume from {last} (epoch {self.book.state.epoch})" if last.is_file() else "")
            + ".")

    def score(self, values: dict[str, float]) -> tuple[float, ...]:
        return (values["psnr"],)

    def best_checkpoint(self, stage: str, epoch: int, values: dict[str, float]) -> dict[str, Any]:
        return _checkpoint(self.eval_model, self.preset, epoch, values)

    def last_checkpoint(self) -> dict[str, Any]:
        training, state = self.training, self.book.state
        return {**_checkpoint(self.eval_model, self.preset, state.epoch, state.last_values),
                "model": _cpu(training.model.state_dict()), "optimizer": training.optimizer.state_dict(),
                "scheduler": training.scheduler.state_dict(),
                "ema": training.ema.state_dict() if training.ema is not None else None,
                "scaler": training.scaler.state_dict(), **self.record}

    def epoch_end(self, stage: str, epoch: int, values: dict[str, float], improved: bool) -> None:
        if self.book.ctx.is_main:
            path = self.book.run.path / "samples" / f"epoch_{epoch:03d}.png"
            self.book.emit(Samples(JOB, epoch, save_samples(path, self.eval_model, self.val, self.preset.data.hr_size)))


# ----------------------------------------------------------------------------- what a step does


@dataclass
class DSRTraining:
    """The DSR network and everything a step updates; ``step`` is one training step (the loop around it
    logs, checkpoints and resumes). It makes no device-to-host synchronisation."""
    model: DSRNet
    net: torch.nn.Module               # what the step calls: ``model``, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler
    update: OptimizerUpdate
    criterion: DSRCriterion
    augment: PairedAugment
    feeder: BatchFeeder
    runtime: Runtime
    camera: Camera | None = None       # [degrade]: the VLR images made from HR on the fly
    vlr_size: tuple[int, int] = (32, 32)

    def step(self, split: PairedSplit, index: torch.Tensor, generator: torch.Generator,
             global_step: int) -> StepResult:
        """Batch from the uint8 cache -> paired augmentation on the device (with a camera: of HR, then the VLR
        made from it through the camera) -> AMP forward and loss -> update (skipped on the device when
        non-finite) -> schedule -> EMA."""
        hr = to_float(self.feeder(split.hr, index))
        if self.camera is None:
            vlr, hr = self.augment(to_float(self.feeder(split.vlr, index)), hr, generator)
        else:
            (hr,) = self.augment.apply([hr], generator)
            vlr = to_float(degrade(hr, self.vlr_size, self.camera, generator))
        vlr = vlr.contiguous(memory_format=self.runtime.memory_format)
        with self.runtime.autocast():
            loss, terms = self.criterion(self.net(vlr), hr)
        applied = self.update(loss)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, step=global_step + 1)
        return StepResult(loss, {"loss": loss, **terms}, applied)


def build_training(preset: Preset, runtime: Runtime, criterion: DSRCriterion, feeder: BatchFeeder,
                   count: NonFiniteCount, ctx: Context = distributed.SINGLE, log=None, *, warmup_steps: int,
                   total_steps: int) -> DSRTraining:
    """A fresh DSR network with the preset's levers, AdamW (fused: it skips non-finite steps on the device),
    per-step warm-up + cosine, EMA and GradScaler (fp16 only)."""
    cfg, device = preset.dsr, runtime.device
    model = DSRNet(preset.vlr_size, preset.data.hr_size, cfg.base_channels, cfg.residual_blocks).to(device)
    prepare_model(model, runtime, log, "DSR network")   # channels_last and the opt-in torch.compile
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  **fused_adamw_kwargs(device))
    scheduler = warmup_cosine(optimizer, warmup_steps, total_steps)
    ema = None
    if cfg.ema_decay > 0:
        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
        ema.module.requires_grad_(False)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.needs_grad_scaler)
    update = OptimizerUpdate(optimizer, scaler, model.parameters(), cfg.grad_clip, count)
    return DSRTraining(model, distributed.wrap(model, ctx, device), optimizer, scheduler, ema, scaler, update,
                       criterion, PairedAugment.from_config(cfg), feeder, runtime, camera_from_config(preset.degrade),
                       preset.vlr_size)


# ----------------------------------------------------------------------------- validation and samples


@torch.no_grad()
def validate(model: torch.nn.Module, split: PairedSplit, criterion: DSRCriterion, runtime: Runtime,
             batch_size: int, ctx: Context = distributed.SINGLE) -> dict[str, float]:
    """Mean loss terms, PSNR and SSIM of ``model`` on a split (each rank takes its share, sums all-reduced)."""
    was_training = model.training
    model.eval()
    sums = Sums()
    device = next(model.parameters()).device
    for index in distributed.shard(torch.arange(len(split)), ctx).split(batch_size):
        vlr, hr = _batch(split, index, device)
        with runtime.autocast():
            sr = model(vlr)
            loss, terms = criterion(sr, hr)
        sr = sr.float().clamp(0, 1)
        sums.add({"loss": loss, **terms, "psnr": psnr(sr, hr).mean(), "ssim": ssim(sr, hr).mean()}, len(index))
    model.train(was_training)
    return sums.means(ctx)


@torch.no_grad()
def bicubic_reference(split: PairedSplit, device: torch.device, batch_size: int) -> dict[str, float]:
    """PSNR and SSIM of bicubic upscaling on a split: the reference line, the same every epoch."""
    psnrs, ssims = [], []
    for index in torch.arange(len(split)).split(batch_size):
        vlr, hr = _batch(split, index, device)
        bicubic = upscale_bicubic(vlr, hr.shape[-1])
        psnrs.append(psnr(bicubic, hr))
        ssims.append(ssim(bicubic, hr))
    return {"bicubic_psnr": torch.cat(psnrs).mean().item(), "bicubic_ssim": torch.cat(ssims).mean().item()}


@torch.no_grad()
def save_samples(path: Path, model: torch.nn.Module, split: PairedSplit, hr_size: int) -> Path:
    """A PNG with one row per image: VLR (nearest-upscaled) | bicubic | SR | HR."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    vlr, hr = _batch(split, torch.arange(min(SAMPLE_ROWS, len(split))), device)
    sr = model(vlr).float().clamp(0, 1)
    model.train(was_training)
    nearest = torch.nn.functional.interpolate(vlr, size=(hr_size, hr_size), mode="nearest")
    tiles = torch.stack([nearest, upscale_bicubic(vlr, hr_size), sr, hr], dim=1).flatten(0, 1)
    grid = make_grid(tiles.cpu(), nrow=4, padding=2, pad_value=1.0)
    atomic.save_image(path, to_pil_image(grid))
    return path


# ----------------------------------------------------------------------------- helpers



def _batch(split: PairedSplit, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    index = index.to(split.hr.device)
    return to_float(split.vlr[index].to(device)), to_float(split.hr[index].to(device))


def _cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state_dict.items()}


def _checkpoint(eval_model: DSRNet, preset: Preset, epoch: int, val: dict[str, float]) -> dict[str, Any]:
    return {"kind": "dsr", "config": eval_model.config, "state_dict": _cpu(eval_model.state_dict()),
            "epoch": epoch, "val_psnr": val.get("psnr"), "val_ssim": val.get("ssim"),
            "bicubic_psnr": val.get("bicubic_psnr"), "preset": preset.name,
            "camera": spec_text(camera_from_config(preset.degrade))}


def _restore(checkpoint: dict[str, Any], training: DSRTraining, generator: torch.Generator) -> None:
    training.model.load_state_dict(checkpoint["model"])
    training.optimizer.load_state_dict(checkpoint["optimizer"])
    training.scheduler.load_state_dict(checkpoint["scheduler"])
    if training.ema is not None and checkpoint.get("ema") is not None:
        training.ema.load_state_dict(checkpoint["ema"])
    training.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng(checkpoint["rng"], generator)


@dataclass(frozen=True)
class WarmStart:
    """The weights of ``dsr.init_weights``, read and checked before any data is loaded."""
    path: str
    state_dict: dict[str, torch.Tensor]
    epoch: Any
    val_psnr: Any

    def apply(self, training: DSRTraining, log) -> str:
        """Into the fresh network and its EMA; the optimiser and schedule start fresh."""
        training.model.load_state_dict(self.state_dict)
        if training.ema is not None:
            training.ema.module.load_state_dict(self.state_dict)
        log(f"warm start: DSR weights from {self.path} (epoch {self.epoch}, val PSNR {_fmt(self.val_psnr)} dB); "
            "optimiser, schedule and EMA start fresh")
        return self.path


def read_warm_start(preset: Preset) -> WarmStart | None:
    """``dsr.init_weights`` (an earlier run's best.pt/last.pt), or None when empty; a WeightsError naming the key
    when the file is missing, not a DSR checkpoint, or a network of other sizes than the preset's."""
    from engine.models.dsr import load_dsr

    value = preset.dsr.init_weights
    if not value:
        return None
    key = f"dsr.init_weights of preset {preset.name}"
    try:
        loaded, checkpoint = load_dsr(value)
    except WeightsError as exc:
        raise WeightsError(f"{key}: {exc} Or empty the key to start from random weights.") from None
    wanted = {"vlr_size": list(preset.vlr_size), "hr_size": preset.data.hr_size,
              "base_channels": preset.dsr.base_channels, "residual_blocks": preset.dsr.residual_blocks}
    differ = [f"{k} {loaded.config.get(k)} vs {v}" for k, v in wanted.items() if loaded.config.get(k) != v]
    if differ:
        raise WeightsError(f"{key} is {value}, a DSR network of other sizes than this preset's (checkpoint vs "
                           f"preset: {', '.join(differ)}). Warm-start from a run with the same data.vlr_width/"
                           "vlr_height, data.hr_size, dsr.base_channels and dsr.residual_blocks, or empty the key.")
    return WarmStart(str(value), loaded.state_dict(), checkpoint.get("epoch"), checkpoint.get("val_psnr"))


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "?"


def _load(root: Path, split: str, preset: Preset, log) -> PairedSplit:
    """``val``, or DSR's training pairs: ``train`` plus the dataset's unlabelled faces, when it has them."""
    if split != "train":
        loaded = load_split(root, split, preset.vlr_size, preset.data.hr_size, log=log)
        log(f"{split}: {len(loaded)} images from {root}")
        return loaded
    loaded = load_dsr_train(root, preset.vlr_size, preset.data.hr_size, log=log, unlabelled=preset.dsr.unlabelled)
    unlabelled = int((loaded.labels < 0).sum())
    left_out = "; the dataset's unlabelled faces left out (dsr.unlabelled = false)" \
        if not preset.dsr.unlabelled and has_split(Path(root).expanduser(), UNLABELLED) else ""
    log(f"train: {len(loaded)} images from {root}" + (f" ({unlabelled} of them unlabelled faces, DSR only)"
                                                       if unlabelled else "") + left_out)
    return loaded


def _summary(book: Bookkeeper, parameters: int, runtime: Runtime, global_batch: int, *, stopped: bool,
             early_stopped: bool, init_weights: str | None, camera: Camera | None) -> dict[str, Any]:
    state = book.state
    best, last = state.best_values, state.last_values
    return {
        "best_val_psnr": best.get("psnr"),
        "best_val_ssim": best.get("ssim"),
        "bicubic_val_psnr": (best or last).get("bicubic_psnr"),
        "bicubic_val_ssim": (best or last).get("bicubic_ssim"),
        "best_epoch": state.best_epoch,
        "last_val_psnr": last.get("psnr"),
        "epochs_run": state.epoch,
        "parameters": parameters,
        "global_batch": global_batch,
        "device": str(runtime.device),
        "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else "off",
        "stopped": stopped,
        "early_stopped": early_stopped,
        "init_weights": init_weights,
        "camera": spec_text(camera),
        **book.summary_extra(),
    }
