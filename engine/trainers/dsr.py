"""DSR training: the job ``train-dsr`` (``run_train_dsr``), readable top to bottom.

Setup: preset (the run's own on --resume) -> VGG19 weights check (fails at once) -> data (uint8
cache on the device) -> frozen recogniser when a loss needs it -> network, AdamW, per-step
warm-up + cosine, EMA, GradScaler -> run directory (new, given, or resumed).
Each epoch: shuffled index batches -> paired augmentation on the device -> AMP forward and loss ->
clipped step -> EMA update; then validation of the EMA weights (PSNR/SSIM beside bicubic, loss
terms), best.pt by val PSNR, a sample strip, last.pt (resumable), early stopping.
A stop request (``stop.check()`` every step) saves last.pt and returns ``Finished(stopped=True)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from engine import atomic
from engine.augment import PairedAugment
from engine.data import PairedSplit, load_split, to_float
from engine.data.resolve import job_data_root
from engine.errors import JobStopped, WeightsError, WorkbenchError
from engine.events import Emit, Finished, Log, Metrics, Progress, Samples
from engine.jobs import JobRequest, StopFlag
from engine.losses.combined import DSRCriterion, LossWeights, build_criterion
from engine.losses.perceptual import load_vgg19
from engine.metrics.image import psnr, ssim
from engine.models.dsr import DSRNet, count_parameters, upscale_bicubic
from engine.presets import Preset
from engine.presets import load as load_preset
from engine.runs import RunDir
from engine.runtime import Runtime, resolve, seed_everything
from engine.trainers.oom import out_of_memory
from engine.trainers.schedule import warmup_cosine

JOB = "train-dsr"
STAGE = "dsr"
SAMPLE_ROWS = 4          # validation images shown in each samples/epoch_NNN.png
PROGRESS_UPDATES = 20    # Progress events per epoch (about)
EMA_WARMUP_POWER = 0.75  # timm's EMA warm-up: decay ramps up over the first steps (short runs stay usable)


# ----------------------------------------------------------------------------- the job


def run_train_dsr(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    opts = request.options
    resume_dir = opts.get("resume")
    resumed = _read_resume(Path(resume_dir)) if resume_dir else None
    preset = resumed.preset if resumed else request.preset
    cfg = preset.dsr
    epochs = int(opts.get("epochs") or (resumed.state["epochs"] if resumed else cfg.epochs))
    weights = LossWeights.from_config(cfg)
    vgg = load_vgg19(cfg.vgg19_weights) if weights.needs_vgg else None  # a missing file stops the run here

    runtime = resolve(preset)
    device = runtime.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image sizes: let cuDNN pick the fastest kernels
    generator = seed_everything(preset.runtime.seed)
    data_root = job_data_root(preset, request.data, emit, JOB)
    train, val = (_load(data_root, split, preset, emit) for split in ("train", "val"))
    if preset.data.cache_on_device:
        train, val = train.to(device), val.to(device)

    recogniser, recogniser_path = None, None
    if weights.needs_recogniser:
        recogniser_path = (opts.get("edgeface") or (resumed and resumed.state.get("recogniser"))
                           or _recogniser_weights(preset, data_root, emit, stop))
        recogniser = _load_recogniser(recogniser_path, emit)
    criterion = build_criterion(cfg, recogniser, device, vgg=vgg)

    model = DSRNet(preset.vlr_size, preset.data.hr_size, cfg.base_channels, cfg.residual_blocks).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    scheduler = warmup_cosine(optimizer, cfg.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch)
    ema = None
    if cfg.ema_decay > 0:
        ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
        ema.module.requires_grad_(False)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.needs_grad_scaler)
    augment = PairedAugment.from_config(cfg)
    parts = Trainables(model, optimizer, scheduler, ema, scaler, generator)
    progress = TrainingState()
    if resumed:
        parts.restore(resumed.state)
        for key, value in resumed.state["progress"].items():
            setattr(progress, key, value)
        run = RunDir.open(resume_dir)
        emit(Log(JOB, f"resuming {run.path} at epoch {progress.epoch + 1}/{epochs} with its own preset "
                      f"{preset.name!r} (preset.toml of the run)"))
    else:
        run = RunDir.for_job(preset, JOB, opts.get("run_dir"))
    parameters = count_parameters(model)
    emit(Log(JOB, f"DSR {preset.vlr_size[0]}x{preset.vlr_size[1]} -> {preset.data.hr_size}: {parameters:,} "
                  f"parameters, x{model.factor} pixel shuffle; {len(train)} train / {len(val)} val images on "
                  f"{device} (AMP {runtime.amp_dtype or 'off'})"))

    eval_model = parts.eval_model
    reference = bicubic_reference(val, device, cfg.batch_size)
    session = Throughput()
    early_stopped = False
    try:
        for epoch in range(progress.epoch + 1, epochs + 1):
            model.train()
            sums = TermSums()
            session.restart_clock()  # validation and checkpoint time do not count as training time
            for step, index in enumerate(torch.randperm(len(train), generator=generator).split(cfg.batch_size), 1):
                stop.check()
                vlr, hr = _batch(train, index, device)
                vlr, hr = augment(vlr, hr, generator)
                with runtime.autocast():
                    sr = model(vlr)
                    loss, terms = criterion(sr, hr)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                progress.global_step += 1
                if ema is not None:
                    ema.update(model, step=progress.global_step)
                sums.add(loss.detach(), terms, len(index))
                session.add(len(index))
                if step % max(1, steps_per_epoch // PROGRESS_UPDATES) == 0 or step == steps_per_epoch:
                    remaining = (epochs - epoch) * len(train) + len(train) - min(len(train), step * cfg.batch_size)
                    emit(Progress(JOB, STAGE, epoch, epochs, step, steps_per_epoch, session.rate,
                                  session.eta(remaining), loss.detach().item()))

            train_values = sums.means()
            train_values.update(lr=scheduler.get_last_lr()[0], images_per_second=session.rate)
            _report(emit, run, epoch, progress.global_step, "train", train_values)

            val_values = {**validate(eval_model, val, criterion, runtime, cfg.batch_size), **reference}
            _report(emit, run, epoch, progress.global_step, "val", val_values)
            if not (math.isfinite(val_values["loss"]) and math.isfinite(val_values["psnr"])):
                # an fp16 step with an overflowing loss is skipped by the GradScaler; weights that give a
                # non-finite validation loss have really diverged (last.pt still holds the previous epoch)
                raise WorkbenchError(f"DSR training diverged at epoch {epoch} (val loss {val_values['loss']}). "
                                     "Lower dsr.learning_rate (e.g. halve it), keep dsr.grad_clip at 1.0, or set "
                                     "runtime.amp = \"bf16\" or \"off\" instead of fp16; then start again or "
                                     f"resume from {run.path / 'last.pt'}.")
            progress.epoch = epoch
            progress.last_val = val_values
            if val_values["psnr"] > progress.best_val_psnr:
                progress.best_val_psnr, progress.best_epoch, progress.stale_epochs = val_values["psnr"], epoch, 0
                progress.best_val = val_values
                atomic.torch_save(run.path / "best.pt", _checkpoint(eval_model, preset, epoch, val_values))
            else:
                progress.stale_epochs += 1
            emit(Samples(JOB, epoch, save_samples(run.path / "samples" / f"epoch_{epoch:03d}.png", eval_model, val,
                                                  preset.data.hr_size)))
            _save_last(run, parts, preset, epochs, progress, recogniser_path)
            if cfg.early_stop_patience and progress.stale_epochs >= cfg.early_stop_patience:
                early_stopped = True
                emit(Log(JOB, f"early stop: no better val PSNR for {progress.stale_epochs} epochs "
                              f"(dsr.early_stop_patience = {cfg.early_stop_patience})"))
                break
    except torch.OutOfMemoryError as exc:
        raise out_of_memory(run, JOB, STAGE, progress.epoch + 1, "dsr.batch_size", cfg.batch_size, exc) from None
    except JobStopped:
        _save_last(run, parts, preset, epochs, progress, recogniser_path)
        emit(Log(JOB, f"stopped during epoch {progress.epoch + 1}; last.pt resumes at epoch {progress.epoch + 1}",
                 "warning"))
        summary = _summary(progress, session, parameters, runtime, stopped=True, early_stopped=False)
        run.write_summary(summary)
        return Finished(JOB, run.path, summary, stopped=True)

    summary = _summary(progress, session, parameters, runtime, stopped=False, early_stopped=early_stopped)
    run.write_summary(summary)
    return Finished(JOB, run.path, summary)


# ----------------------------------------------------------------------------- validation and samples


@torch.no_grad()
def validate(model: torch.nn.Module, split: PairedSplit, criterion: DSRCriterion, runtime: Runtime,
             batch_size: int) -> dict[str, float]:
    """Mean loss terms, PSNR and SSIM of ``model`` on a split."""
    was_training = model.training
    model.eval()
    sums = TermSums()
    quality = {"psnr": [], "ssim": []}
    for index in torch.arange(len(split)).split(batch_size):
        vlr, hr = _batch(split, index, runtime.device)
        with runtime.autocast():
            sr = model(vlr)
            loss, terms = criterion(sr, hr)
        sums.add(loss, terms, len(index))
        sr = sr.float().clamp(0, 1)
        quality["psnr"].append(psnr(sr, hr))
        quality["ssim"].append(ssim(sr, hr))
    model.train(was_training)
    values = sums.means()
    values.update({name: torch.cat(parts).mean().item() for name, parts in quality.items()})
    return values


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


# ----------------------------------------------------------------------------- bookkeeping


@dataclass
class TrainingState:
    """What a resume needs beyond the tensors' own state."""
    epoch: int = 0                    # last completed epoch
    global_step: int = 0
    best_val_psnr: float = -math.inf
    best_epoch: int = 0
    stale_epochs: int = 0             # epochs since the best val PSNR
    best_val: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float] = field(default_factory=dict)


class TermSums:
    """Image-weighted sums of loss terms, kept on the device (no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], n: int) -> None:
        for name, value in {"loss": loss.detach().float(), **terms}.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * n
        self.count += n

    def means(self) -> dict[str, float]:
        return {name: (total / max(1, self.count)).item() for name, total in self.sums.items()}


class Throughput:
    """Training images per second over this session (validation time excluded)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._last = time.perf_counter()

    def add(self, n: int) -> None:
        now = time.perf_counter()
        self.images += n
        self.seconds += now - self._last
        self._last = now

    def restart_clock(self) -> None:
        self._last = time.perf_counter()

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def eta(self, images_left: int) -> float | None:
        return images_left / self.rate if self.rate > 0 else None


def _report(emit: Emit, run: RunDir, epoch: int, step: int, split: str, values: dict[str, float]) -> None:
    event = Metrics(JOB, STAGE, epoch, step, split, values)
    run.log_metrics(event)
    emit(event)


def _batch(split: PairedSplit, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    index = index.to(split.hr.device)
    return to_float(split.vlr[index].to(device)), to_float(split.hr[index].to(device))


def _checkpoint(eval_model: DSRNet, preset: Preset, epoch: int, val: dict[str, float]) -> dict[str, Any]:
    return {"kind": "dsr", "config": eval_model.config,
            "state_dict": {k: v.detach().cpu() for k, v in eval_model.state_dict().items()},
            "epoch": epoch, "val_psnr": val.get("psnr"), "val_ssim": val.get("ssim"),
            "bicubic_psnr": val.get("bicubic_psnr"), "preset": preset.name}


@dataclass
class Trainables:
    """Everything a step changes; ``resume_state``/``restore`` carry it through last.pt."""
    model: DSRNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: ModelEmaV3 | None
    scaler: torch.amp.GradScaler
    generator: torch.Generator

    @property
    def eval_model(self) -> DSRNet:
        """The weights validated and saved: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def resume_state(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def _save_last(run: RunDir, parts: Trainables, preset: Preset, epochs: int, progress: TrainingState,
               recogniser: str | Path | None) -> None:
    """last.pt: the EMA weights as ``state_dict`` (usable like best.pt) plus everything --resume needs."""
    checkpoint = _checkpoint(parts.eval_model, preset, progress.epoch, progress.last_val)
    checkpoint.update(parts.resume_state())
    checkpoint.update({"epochs": epochs, "progress": vars(progress).copy(),
                       "recogniser": str(recogniser) if recogniser else None})
    atomic.torch_save(run.path / "last.pt", checkpoint)


@dataclass
class Resumed:
    preset: Preset
    state: dict[str, Any]


def _read_resume(run_path: Path) -> Resumed:
    run = RunDir.open(run_path)
    last = run.path / "last.pt"
    if not last.is_file():
        raise WorkbenchError(f"cannot resume {run.path}: it has no last.pt (the run ended before its first "
                             "checkpoint). Start a new run instead: `vlr-workbench train-dsr --preset P`.")
    preset = load_preset(run.path / "preset.toml")
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"cannot read {last} ({type(exc).__name__}: {exc}); the file is damaged. Resume is "
                           "not possible: start a new run, or use best.pt for evaluation.") from None
    if not isinstance(state, dict) or state.get("kind") != "dsr" or "optimizer" not in state:
        raise WorkbenchError(f"{last} is not a resumable train-dsr checkpoint (no optimiser state). Give the "
                             "run directory of a train-dsr run.")
    return Resumed(preset, state)


def _load(root: Path, split: str, preset: Preset, emit: Emit) -> PairedSplit:
    loaded = load_split(root, split, preset.vlr_size, preset.data.hr_size)
    emit(Log(JOB, f"{split}: {len(loaded)} images from {root}"))
    return loaded


def _recogniser_weights(preset: Preset, data_root: Path, emit: Emit, stop: StopFlag) -> Path:
    """runtime.edgeface_weights, else a recogniser pre-trained on the HR images (the demo path)."""
    from engine.trainers.finetune import recogniser_weights

    return recogniser_weights(preset, data_root, emit, stop)


def _load_recogniser(path: str | Path, emit: Emit) -> torch.nn.Module:
    from engine.models.edgeface import load_edgeface

    recogniser = load_edgeface(path)
    emit(Log(JOB, f"frozen recogniser {recogniser.variant} from {path}"))
    return recogniser


def _summary(progress: TrainingState, session: Throughput, parameters: int, runtime: Runtime, *, stopped: bool,
             early_stopped: bool) -> dict[str, Any]:
    best, last = progress.best_val, progress.last_val
    return {
        "best_val_psnr": best.get("psnr"),
        "best_val_ssim": best.get("ssim"),
        "bicubic_val_psnr": (best or last).get("bicubic_psnr"),
        "bicubic_val_ssim": (best or last).get("bicubic_ssim"),
        "best_epoch": progress.best_epoch,
        "last_val_psnr": last.get("psnr"),
        "epochs_run": progress.epoch,
        "global_step": progress.global_step,
        "images_per_second": round(session.rate, 2),
        "parameters": parameters,
        "device": str(runtime.device),
        "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else "off",
        "stopped": stopped,
        "early_stopped": early_stopped,
    }
