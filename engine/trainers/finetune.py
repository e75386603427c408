"""EdgeFace fine-tuning (job ``finetune``) and recogniser pre-training on HR images (job ``pretrain``).

Fine-tuning teaches the recogniser the look of DSR outputs: its inputs are the training VLR images
super-resolved by the frozen DSR network in whole batches on the device (bicubic upscaling when no
DSR checkpoint is given), labels are subject ids. Stage 1 trains the ArcFace head alone (backbone
frozen, ``head_lr``); stage 2 trains everything (``backbone_lr``, ``head_lr_stage2``) with a cosine
schedule and early stopping on val top-1. Pre-training runs the same loop on HR images from a
random initialisation (the demo path when no pretrained weights exist).

Validation is closed-set: held-out images of the training identities (the layout's val split; when
it shares no identity with train, one image per identity is held out of train). It reports loss,
top-1 and ``entropy``, the normalised entropy of the predicted-class histogram (1 = predictions
spread over all classes, 0 = everything predicted as one class: collapse). Identification of
unseen identities belongs to evaluation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from engine import atomic
from engine.data import PairedSplit, load_split, to_float
from engine.data.resolve import job_data_root
from engine.errors import JobStopped, WeightsError, WorkbenchError
from engine.trainers.oom import out_of_memory
from engine.events import Emit, Finished, Log, Metrics, Progress
from engine.jobs import JobRequest, StopFlag
from engine.models.arcface import ArcFaceHead, arcface_loss
from engine.models.edgeface import (EMBEDDING_DIM, OBTAIN_WEIGHTS, EdgeFace, build_edgeface, count_parameters,
                                    edgeface_checkpoint, load_edgeface, prepare_input,
                                    resize_for_recogniser)
from engine.presets import Preset
from engine.runs import RunDir, latest_run
from engine.runtime import Runtime, resolve, seed_everything
from engine.augment import FinetuneAugment
from engine.trainers.schedule import warmup_cosine

FINETUNE = "finetune"
PRETRAIN = "pretrain"
PROGRESS_UPDATES = 20  # Progress events per epoch (about)
PRETRAIN_WARMUP_EPOCHS = 1

InputFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 batch on the device -> float [0, 1] recogniser input


# ----------------------------------------------------------------------------- jobs


def run_finetune(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    """Stage 1 (head only) then stage 2 (whole model) on DSR outputs of the training images."""
    preset, opts = request.preset, request.options
    cfg = preset.finetune
    stage1 = int(_option(opts, "stage1_epochs", cfg.stage1_epochs))
    stage2 = int(_option(opts, "stage2_epochs", cfg.stage2_epochs))
    if stage1 + stage2 <= 0:
        raise WorkbenchError(f"nothing to train: stage 1 and stage 2 epochs are both 0 (preset {preset.name}: "
                             "finetune.stage1_epochs, finetune.stage2_epochs, or --stage1-epochs/--stage2-epochs). "
                             "Give at least one epoch (the guide: 5 and 25).")
    runtime = resolve(preset)
    generator = seed_everything(preset.runtime.seed)
    data_root = job_data_root(preset, request.data, emit, FINETUNE)
    train, val = _load_splits(data_root, preset, runtime, emit, FINETUNE)

    weights = opts.get("edgeface") or recogniser_weights(preset, data_root, emit, stop)
    model = load_edgeface(weights).to(runtime.device)  # the file decides the architecture
    emit(Log(FINETUNE, f"EdgeFace {model.variant} from {weights}"))
    if model.variant != preset.runtime.edgeface_variant:
        emit(Log(FINETUNE, f"{weights} holds {model.variant}, not the preset's runtime.edgeface_variant "
                           f"{preset.runtime.edgeface_variant}: fine-tuning {model.variant}", "warning"))
    inputs, input_kind = _vlr_inputs(opts.get("dsr"), preset, runtime, emit)

    session = Session.create(FINETUNE, preset, runtime, model, train, val, "vlr", inputs, generator,
                             RunDir.for_job(preset, FINETUNE, opts.get("run_dir")), emit, stop)
    session.extra = {"input": input_kind, "edgeface_weights": str(weights), "dsr": str(opts.get("dsr") or "")}
    try:
        session.run_stage("stage1", stage1, train_backbone=False, patience=0)
        session.run_stage("stage2", stage2, train_backbone=True, patience=cfg.early_stop_patience)
    except JobStopped:
        return session.finish(stopped=True)
    return session.finish(stopped=False)


def run_pretrain(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    """Train a recogniser from scratch on the HR training images (head and whole model together)."""
    preset = request.preset
    data_root = job_data_root(preset, request.data, emit, PRETRAIN)
    epochs = int(_option(request.options, "epochs", preset.finetune.pretrain_epochs))
    if epochs <= 0:
        raise WorkbenchError(f"nothing to train: finetune.pretrain_epochs is 0 in preset {preset.name}. Pass "
                             "--epochs N or set finetune.pretrain_epochs (cpu-demo sets 40).")
    session = _pretrain_session(preset, data_root, request.options.get("run_dir"), emit, stop)
    try:
        session.run_stage("pretrain", epochs, train_backbone=True, patience=preset.finetune.early_stop_patience)
    except JobStopped:
        return session.finish(stopped=True)
    return session.finish(stopped=False)


def recogniser_weights(preset: Preset, data_root: Path | str, emit: Emit, stop: StopFlag) -> Path:
    """The recogniser weights a job should freeze: the preset's file, the latest pretrain run's
    ``best.pt``, or a pre-training run made now (``finetune.pretrain_epochs > 0``).

    A stop request during that pre-training raises :class:`JobStopped` to the calling job.
    """
    rt = preset.runtime
    if rt.edgeface_weights:
        path = Path(rt.edgeface_weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"runtime.edgeface_weights is {rt.edgeface_weights!r}, but {path} does not exist. "
                               f"{OBTAIN_WEIGHTS}")
        return path
    previous = latest_run(rt.runs_dir, preset.name, PRETRAIN, require="best.pt")
    if previous is not None:
        emit(Log(PRETRAIN, f"recogniser: {previous / 'best.pt'} (latest pretrain run of preset {preset.name})"))
        trained_on = RunDir(previous).read_summary().get("data_root")
        if trained_on and Path(trained_on).resolve() != Path(data_root).resolve():
            emit(Log(PRETRAIN, f"that recogniser was pre-trained on {trained_on}, not on {data_root}; run "
                               "`vlr-workbench pretrain` to pre-train one on this dataset", "warning"))
        return previous / "best.pt"
    epochs = preset.finetune.pretrain_epochs
    if epochs <= 0:
        raise WeightsError(f"preset {preset.name} names no EdgeFace weights (runtime.edgeface_weights is empty), "
                           f"no pretrain run of it exists under {rt.runs_dir}, and finetune.pretrain_epochs is 0. "
                           f"Either set runtime.edgeface_weights to a pretrained file (or pass --edgeface): "
                           f"{OBTAIN_WEIGHTS} Or set finetune.pretrain_epochs > 0 to pre-train a recogniser on "
                           "the HR training images first (`vlr-workbench pretrain --preset P`).")
    emit(Log(PRETRAIN, f"no EdgeFace weights given: pre-training {rt.edgeface_variant} on HR images for "
                       f"{epochs} epochs (finetune.pretrain_epochs)"))
    session = _pretrain_session(preset, Path(data_root), None, emit, stop)
    try:
        session.run_stage("pretrain", epochs, train_backbone=True, patience=preset.finetune.early_stop_patience)
    except JobStopped:
        session.finish(stopped=True)
        raise
    session.finish(stopped=False)
    return session.run.path / "best.pt"


def _pretrain_session(preset: Preset, data_root: Path, run_dir: str | None, emit: Emit,
                      stop: StopFlag) -> "Session":
    runtime = resolve(preset)
    generator = seed_everything(preset.runtime.seed)
    train, val = _load_splits(data_root, preset, runtime, emit, PRETRAIN)
    model = build_edgeface(preset.runtime.edgeface_variant).to(runtime.device)
    session = Session.create(PRETRAIN, preset, runtime, model, train, val, "hr", to_float, generator,
                             RunDir.for_job(preset, PRETRAIN, run_dir), emit, stop)
    session.extra = {"input": "hr", "data_root": str(data_root)}
    return session


# ----------------------------------------------------------------------------- data and inputs


@dataclass
class LabelledImages:
    images: torch.Tensor  # uint8 [N,3,h,w] on the data device (VLR for fine-tuning, HR for pre-training)
    labels: torch.Tensor  # int64 [N], index into the training classes

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def closed_set(train: PairedSplit, val: PairedSplit, field_name: str) -> tuple[LabelledImages, LabelledImages, str]:
    """(train, val, note): val = val-split images of training identities, else one held-out image each."""
    index = {name: i for i, name in enumerate(train.classes)}
    keep = [i for i, s in enumerate(val.subjects) if s in index]
    train_images = getattr(train, field_name)
    if keep:
        keep_t = torch.tensor(keep, dtype=torch.long)
        labels = torch.tensor([index[val.subjects[i]] for i in keep], dtype=torch.long)
        dropped = len(val) - len(keep)
        note = f"val: {len(keep)} images of {len(set(labels.tolist()))} training identities"
        note += f" ({dropped} images of unseen identities left out)" if dropped else ""
        val_images = getattr(val, field_name)[keep_t.to(getattr(val, field_name).device)]
        return (LabelledImages(train_images, train.labels.clone()),
                LabelledImages(val_images, labels.to(val_images.device)), note)
    labels = train.labels.cpu()
    held = []
    for c in range(len(train.classes)):
        members = (labels == c).nonzero().flatten()
        if len(members) >= 2:
            held.append(int(members[-1]))
    if not held:
        raise WorkbenchError(f"no validation images of training identities: {val.root} val split shares no "
                             "identity with train, and no training identity has two images to hold one out. Add "
                             "images per identity, or put held-out images of training identities in val_processed.")
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held] = False
    device = train_images.device
    note = (f"val split shares no identity with train: holding out {len(held)} training images (one per identity) "
            "for closed-set validation")
    return (LabelledImages(train_images[mask.to(device)], train.labels[mask.to(train.labels.device)]),
            LabelledImages(train_images[~mask.to(device)], train.labels[~mask.to(train.labels.device)]), note)


def _vlr_inputs(dsr_path: str | None, preset: Preset, runtime: Runtime, emit: Emit) -> tuple[InputFn, str]:
    """The recogniser's inputs from VLR batches: frozen DSR outputs, or bicubic upscaling without DSR."""
    from engine.models.dsr import load_dsr, upscale_bicubic

    hr_size = preset.data.hr_size
    if not dsr_path:
        emit(Log(FINETUNE, "no DSR checkpoint given (--dsr): fine-tuning on bicubic-upscaled VLR images", "warning"))
        return (lambda vlr: upscale_bicubic(to_float(vlr), hr_size)), "bicubic"
    dsr, _ = load_dsr(dsr_path, runtime.device)
    dsr.requires_grad_(False)
    emit(Log(FINETUNE, f"inputs: VLR images super-resolved by the frozen DSR network {dsr_path}"))

    @torch.no_grad()
    def super_resolve(vlr: torch.Tensor) -> torch.Tensor:
        with runtime.autocast():
            return dsr(to_float(vlr)).float().clamp_(0.0, 1.0)

    return super_resolve, "dsr"


# ----------------------------------------------------------------------------- the training session


@dataclass
class StageResult:
    best_top1: float = -1.0
    best_epoch: int = 0
    epochs_run: int = 0
    early_stopped: bool = False


@dataclass
class Session:
    """One run: model, ArcFace head, data, run directory and the bookkeeping shared by its stages."""

    job: str
    preset: Preset
    runtime: Runtime
    model: EdgeFace
    head: ArcFaceHead
    train: LabelledImages
    val: LabelledImages
    classes: list[str]
    inputs: InputFn
    generator: torch.Generator
    run: RunDir
    emit: Emit
    stop: StopFlag
    augment: FinetuneAugment
    stages: dict[str, StageResult] = field(default_factory=dict)
    best_top1: float = -1.0
    best_loss: float = math.inf
    best_stage: str = ""
    best_epoch: int = 0
    global_step: int = 0
    images: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, job: str, preset: Preset, runtime: Runtime, model: EdgeFace, train_split: PairedSplit,
               val_split: PairedSplit, field_name: str, inputs: InputFn, generator: torch.Generator, run: RunDir,
               emit: Emit, stop: StopFlag) -> "Session":
        train, val, note = closed_set(train_split, val_split, field_name)
        emit(Log(job, note))
        cfg = preset.finetune
        head = ArcFaceHead(EMBEDDING_DIM, len(train_split.classes), cfg.arcface_scale, cfg.arcface_margin)
        session = cls(job, preset, runtime, model, head.to(runtime.device), train, val, list(train_split.classes),
                      inputs, generator, run, emit, stop, FinetuneAugment.from_config(cfg))
        emit(Log(job, f"{job}: EdgeFace {model.variant} ({count_parameters(model):,} parameters), "
                      f"{len(session.classes)} identities, {len(train)} train / {len(val)} val images on "
                      f"{runtime.device} (AMP {runtime.amp_dtype or 'off'}); run directory {run.path}"))
        return session

    # -- stages

    def _optimizer(self, stage: str, train_backbone: bool) -> torch.optim.Optimizer:
        cfg = self.preset.finetune
        if stage == "pretrain":
            groups = [{"params": [*self.model.parameters(), *self.head.parameters()], "lr": cfg.pretrain_lr}]
        elif train_backbone:
            groups = [{"params": list(self.model.parameters()), "lr": cfg.backbone_lr},
                      {"params": list(self.head.parameters()), "lr": cfg.head_lr_stage2}]
        else:
            groups = [{"params": list(self.head.parameters()), "lr": cfg.head_lr}]
        # foreach: one fused call over all tensors (torch picks it by default on CUDA only; it helps on CPU too)
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=True)

    def run_stage(self, stage: str, epochs: int, *, train_backbone: bool, patience: int) -> StageResult:
        """Train ``epochs`` epochs; best.pt follows the best val top-1 of the whole run."""
        result = self.stages.setdefault(stage, StageResult())
        if epochs <= 0:
            return result
        self.model.requires_grad_(train_backbone)
        optimizer = self._optimizer(stage, train_backbone)
        steps = math.ceil(len(self.train) / self.preset.finetune.batch_size)
        scheduler = None
        if train_backbone:  # stage 1 keeps head_lr constant; stage 2 and pre-training decay it (cosine)
            warmup = PRETRAIN_WARMUP_EPOCHS * steps if stage == "pretrain" and epochs > 1 else 0
            scheduler = warmup_cosine(optimizer, warmup, epochs * steps)
        scaler = torch.amp.GradScaler(self.runtime.device.type, enabled=self.runtime.needs_grad_scaler)
        stale = 0
        for epoch in range(1, epochs + 1):
            try:
                train_values = self._train_epoch(stage, epoch, epochs, optimizer, scheduler, scaler, train_backbone)
            except torch.OutOfMemoryError as exc:
                raise out_of_memory(self.run, self.job, stage, epoch, "finetune.batch_size",
                                    self.preset.finetune.batch_size, exc) from None
            except JobStopped:
                self._save_last(stage, epoch - 1, optimizer, scheduler)
                self.emit(Log(self.job, f"stopped during {stage} epoch {epoch}", "warning"))
                raise
            self._report(stage, epoch, "train", train_values)
            val_values = self.validate()
            self._report(stage, epoch, "val", val_values)
            result.epochs_run = epoch
            if val_values["top1"] > result.best_top1:
                result.best_top1, result.best_epoch, stale = val_values["top1"], epoch, 0
            else:
                stale += 1
            # best.pt: the best val top-1 of the run; a tie (small val sets) goes to the lower val loss
            score = (val_values["top1"], -val_values["loss"])
            if score > (self.best_top1, -self.best_loss):
                self.best_top1, self.best_loss = val_values["top1"], val_values["loss"]
                self.best_stage, self.best_epoch = stage, epoch
                atomic.torch_save(self.run.path / "best.pt", self._checkpoint(stage, epoch, val_values))
            self._save_last(stage, epoch, optimizer, scheduler, val_values)
            if patience and stale >= patience:
                result.early_stopped = True
                self.emit(Log(self.job, f"{stage}: early stop, no better val top-1 for {stale} epochs "
                                        f"(finetune.early_stop_patience = {patience})"))
                break
        return result

    def _train_epoch(self, stage: str, epoch: int, epochs: int, optimizer, scheduler, scaler,
                     train_backbone: bool) -> dict[str, float]:
        cfg = self.preset.finetune
        self.model.train(train_backbone)
        self.head.train()
        steps = math.ceil(len(self.train) / cfg.batch_size)
        loss_sum = torch.zeros((), device=self.runtime.device)
        correct = torch.zeros((), device=self.runtime.device)
        clock = time.perf_counter()
        order = torch.randperm(len(self.train), generator=self.generator)
        for step, index in enumerate(order.split(cfg.batch_size), 1):
            self.stop.check()
            index = index.to(self.train.images.device)
            labels = self.train.labels[index].to(self.runtime.device)
            # augment at the recogniser's 112x112 (fewer pixels than HR; the ops commute with the resize)
            images = resize_for_recogniser(self.inputs(self.train.images[index].to(self.runtime.device)))
            images = self.augment(images, self.generator)
            with torch.set_grad_enabled(train_backbone), self.runtime.autocast():
                embeddings = self.model(prepare_input(images))
            cos = self.head.cosine(embeddings)
            loss = arcface_loss(self.head.margin_logits(cos, labels), labels, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            self.global_step += 1
            n = len(index)
            loss_sum += loss.detach() * n
            correct += (cos.detach().argmax(1) == labels).sum()
            now = time.perf_counter()
            self.images, self.seconds, clock = self.images + n, self.seconds + now - clock, now
            if step % max(1, steps // PROGRESS_UPDATES) == 0 or step == steps:
                left = (epochs - epoch) * len(self.train) + max(0, len(self.train) - step * cfg.batch_size)
                self.emit(Progress(self.job, stage, epoch, epochs, step, steps, self.images_per_second,
                                   left / self.images_per_second if self.images_per_second else None, loss.item()))
        if not torch.isfinite(loss_sum):  # checked once an epoch: a per-step check would sync the GPU every step
            raise WorkbenchError(
                f"{self.job} {stage} diverged in epoch {epoch} (non-finite loss). Lower the learning rate of this "
                "stage (finetune.head_lr, backbone_lr, head_lr_stage2 or pretrain_lr), or finetune.arcface_scale / "
                "arcface_margin (e.g. scale 32, margin 0.35); with fp16 set runtime.amp = \"bf16\" or \"off\".")
        return {"loss": (loss_sum / len(self.train)).item(), "top1": (correct / len(self.train)).item(),
                "lr": optimizer.param_groups[0]["lr"], "images_per_second": self.images_per_second}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Closed-set val: loss (with margin and smoothing, like training), top-1 and prediction entropy."""
        self.model.eval()
        self.head.eval()
        cfg = self.preset.finetune
        losses, predictions = [], []
        for index in torch.arange(len(self.val)).split(cfg.batch_size):
            index = index.to(self.val.images.device)
            labels = self.val.labels[index].to(self.runtime.device)
            with self.runtime.autocast():
                embeddings = self.model(prepare_input(self.inputs(self.val.images[index].to(self.runtime.device))))
            cos = self.head.cosine(embeddings)
            losses.append(F.cross_entropy(self.head.margin_logits(cos, labels), labels,
                                          label_smoothing=cfg.label_smoothing, reduction="sum"))
            predictions.append(cos.argmax(1))
        predicted = torch.cat(predictions)
        labels = self.val.labels.to(predicted.device)
        return {"loss": (torch.stack(losses).sum() / len(self.val)).item(),
                "top1": (predicted == labels).float().mean().item(),
                "entropy": prediction_entropy(predicted, len(self.classes))}

    # -- bookkeeping

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def _report(self, stage: str, epoch: int, split: str, values: dict[str, float]) -> None:
        event = Metrics(self.job, stage, epoch, self.global_step, split, values)
        self.run.log_metrics(event)
        self.emit(event)

    def _checkpoint(self, stage: str, epoch: int, val_values: dict[str, float] | None) -> dict[str, Any]:
        return edgeface_checkpoint(self.model, head=self.head, classes=self.classes, job=self.job, stage=stage,
                                   epoch=epoch, val=dict(val_values or {}), preset=self.preset.name,
                                   arcface={"scale": self.head.scale, "margin": self.head.margin}, **self.extra)

    def _save_last(self, stage: str, epoch: int, optimizer, scheduler, val_values=None) -> None:
        """last.pt: usable like best.pt, plus optimiser, schedule and RNG state of the stage it ended in."""
        checkpoint = self._checkpoint(stage, epoch, val_values)
        checkpoint.update(optimizer=optimizer.state_dict(),
                          scheduler=scheduler.state_dict() if scheduler is not None else None,
                          rng={"generator": self.generator.get_state(), "torch": torch.get_rng_state()},
                          global_step=self.global_step)
        atomic.torch_save(self.run.path / "last.pt", checkpoint)

    def finish(self, *, stopped: bool) -> Finished:
        summary = self.summary(stopped=stopped)
        self.run.write_summary(summary)
        return Finished(self.job, self.run.path, summary, stopped=stopped)

    def summary(self, *, stopped: bool) -> dict[str, Any]:
        def best(stage: str) -> float | None:
            result = self.stages.get(stage)
            return result.best_top1 if result and result.epochs_run else None

        out: dict[str, Any] = {}
        if self.job == FINETUNE:
            out.update(stage1_best_top1=best("stage1"), stage2_best_top1=best("stage2"))
        else:
            out.update(pretrain_best_top1=best("pretrain"))
        out.update({
            "best_val_top1": self.best_top1 if self.best_stage else None,
            "best_stage": self.best_stage,
            "best_epoch": self.best_epoch,
            "epochs_run": sum(r.epochs_run for r in self.stages.values()),
            "early_stopped": any(r.early_stopped for r in self.stages.values()),
            "global_step": self.global_step,
            "images_per_second": round(self.images_per_second, 2),
            "parameters": count_parameters(self.model),
            "head_parameters": count_parameters(self.head),
            "variant": self.model.variant,
            "identities": len(self.classes),
            "train_images": len(self.train),
            "val_images": len(self.val),
            "device": str(self.runtime.device),
            "amp": str(self.runtime.amp_dtype).replace("torch.", "") if self.runtime.amp_dtype else "off",
            "stopped": stopped,
            **self.extra,
        })
        return out


def prediction_entropy(predicted: torch.Tensor, num_classes: int) -> float:
    """Entropy of the predicted-class histogram over ``log(num_classes)``: 0 = one class for everything."""
    if num_classes < 2 or predicted.numel() == 0:
        return 0.0
    p = torch.bincount(predicted.flatten(), minlength=num_classes).float() / predicted.numel()
    return float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(num_classes))


# ----------------------------------------------------------------------------- helpers


def _option(options: dict[str, Any], key: str, default: Any) -> Any:
    value = options.get(key)
    return default if value is None else value


def _load_splits(root: Path, preset: Preset, runtime: Runtime, emit: Emit,
                 job: str) -> tuple[PairedSplit, PairedSplit]:
    splits = []
    for name in ("train", "val"):
        split = load_split(root, name, preset.vlr_size, preset.data.hr_size)
        emit(Log(job, f"{split.summary()} from {root}"))
        splits.append(split.to(runtime.device) if preset.data.cache_on_device else split)
    return splits[0], splits[1]
