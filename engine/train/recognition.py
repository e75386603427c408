"""ArcFace training shared by fine-tuning (``finetune``) and pre-training (``pretrain``).

A run is one or more stages (fine-tuning: ``stage1`` head only, then ``stage2`` whole model;
pre-training: ``pretrain``). Each stage: optimiser and schedule of its own -> epochs of shuffled
global batches (each rank its slice) -> recogniser inputs on the device -> augmentation at 112x112
-> AMP forward, ArcFace margin loss -> step (skipped when non-finite); then closed-set validation
(loss, top-1, prediction entropy), best.pt by val top-1 over the whole run, last.pt (resumable at
the exact step and stage), early stopping. The epoch loop is ``engine.train.loop.fit`` (``ArcFaceStage`` is
what it calls for one stage); the run directory, status, stop requests and checkpoints belong to
``bookkeeper.Bookkeeper``.

Validation is closed-set: held-out images of the training identities (the layout's val split; when
it shares no identity with train, one image per identity is held out of train). ``entropy`` is the
normalised entropy of the predicted-class histogram (1 = spread over all classes, 0 = collapse).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine import distributed
from engine.data.augment import FinetuneAugment
from engine.data import PairedSplit, load_split
from engine.distributed import Context
from engine.errors import WorkbenchError
from engine.events import Emit, Finished, Log
from engine.data.camera import Camera, camera_from_config, degrade, spec_text
from engine.data.camera.splits import camera_images
from engine.models.adaface import margin_head
from engine.models.arcface import ArcFaceHead, arcface_loss
from engine.models.edgeface import EMBEDDING_DIM, EdgeFace, count_all_parameters, edgeface_checkpoint, prepare_input
from engine.models.edgeface import resize_for_recogniser
from engine.presets import Preset
from engine.data.placement import BatchFeeder, estimate_job_bytes, place_splits
from engine.runtime import Runtime, fused_adamw_kwargs
from engine.train.bookkeeper import Bookkeeper
from engine.train.loop import Stage, fit
from engine.train.loop_state import Sums
from engine.train.resume import Resume, restore_rng
from engine.train.schedule import warmup_cosine
from engine.train.update import OptimizerUpdate, StepResult

PRETRAIN_WARMUP_EPOCHS = 1

InputFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 batch on the device -> float [0, 1] recogniser input


@dataclass
class LabelledImages:
    images: torch.Tensor  # uint8 [N,3,h,w] on the data device (VLR for fine-tuning, HR for pre-training and
                          # for fine-tuning through a camera, which makes the VLR images from them every step)
    labels: torch.Tensor  # int64 [N], index into the training classes
    teacher: torch.Tensor | None = None  # float [N,512]: the frozen base recogniser's embeddings of the HR images

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


def histogram_entropy(counts: torch.Tensor) -> float:
    """Entropy of a predicted-class histogram over ``log(classes)``: 0 = one class for everything."""
    total = counts.sum()
    if counts.numel() < 2 or total == 0:
        return 0.0
    p = counts.float() / total
    return float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(counts.numel()))


class ArcFaceNet(nn.Module):
    """Recogniser and margin head as one module, so DistributedDataParallel keeps both in sync."""

    def __init__(self, model: EdgeFace, head: ArcFaceHead, label_smoothing: float, distill: float = 0.0) -> None:
        super().__init__()
        self.model, self.head, self.label_smoothing, self.distill = model, head, label_smoothing, distill

    def forward(self, images: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(loss, cosines, distillation term or None) of a batch of recogniser inputs in [0, 1] at 112x112: the
        margin loss, plus ``distill`` x (1 - cos(embedding, the teacher's embedding of the HR face))."""
        embeddings = self.model(prepare_input(images))
        cos = self.head.cosine(embeddings)
        norms = embeddings.detach().float().norm(dim=1)
        loss = arcface_loss(self.head.margin_logits(cos, labels, norms), labels, self.label_smoothing)
        if teacher is None:
            return loss, cos, None
        term = 1.0 - F.cosine_similarity(embeddings.float(), teacher.float(), dim=1).mean()
        return loss + self.distill * term, cos, term


@dataclass
class StageResult:
    best_top1: float = -1.0
    best_epoch: int = 0
    epochs_run: int = 0
    early_stopped: bool = False


def arcface_optimizer(preset: Preset, stage: str, train_backbone: bool, model: nn.Module, head: nn.Module,
                      device: torch.device) -> torch.optim.Optimizer:
    """AdamW of a stage: pre-training one rate for all; stage 2 the backbone and head rates; stage 1 the head."""
    cfg = preset.finetune
    if stage == "pretrain":
        groups = [{"params": [*model.parameters(), *head.parameters()], "lr": cfg.pretrain_lr}]
    elif train_backbone:
        groups = [{"params": list(model.parameters()), "lr": cfg.backbone_lr},
                  {"params": list(head.parameters()), "lr": cfg.head_lr_stage2}]
    else:
        groups = [{"params": list(head.parameters()), "lr": cfg.head_lr}]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, **fused_adamw_kwargs(device))


@dataclass
class ArcFaceStep:
    """What one ArcFace training step does (the trainer's loop logs, checkpoints and resumes around it);
    no device-to-host synchronisation."""
    net: nn.Module                     # ArcFaceNet, DDP-wrapped under torchrun
    update: OptimizerUpdate
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    augment: FinetuneAugment
    feeder: BatchFeeder
    inputs: InputFn
    runtime: Runtime
    camera: Camera | None = None        # [degrade]: the VLR inputs made from the HR images every step
    vlr_size: tuple[int, int] = (32, 32)

    def __call__(self, train: LabelledImages, index: torch.Tensor, generator: torch.Generator) -> StepResult:
        """uint8 batch (through the camera first, when there is one: HR -> VLR, the same draws for every row of
        a pipeline) -> recogniser inputs (``inputs``: e.g. the frozen DSR) -> augmentation at 112x112 (fewer
        pixels than HR; the ops commute with the resize) -> AMP forward, margin (+ distillation) loss -> update
        -> schedule."""
        device = self.runtime.device
        labels = train.labels[index.to(train.labels.device, non_blocking=True)].to(device, non_blocking=True)
        batch = self.feeder(train.images, index)
        if self.camera is not None:
            batch = degrade(batch, self.vlr_size, self.camera, generator)
        images = resize_for_recogniser(self.inputs(batch))
        images = self.augment(images, generator).contiguous(memory_format=self.runtime.memory_format)
        teacher = None
        if train.teacher is not None:
            teacher = train.teacher[index.to(train.teacher.device, non_blocking=True)].to(device, non_blocking=True)
        with self.runtime.autocast():
            loss, cos, distill = self.net(images, labels, teacher)
        applied = self.update(loss)
        if self.scheduler is not None:
            self.scheduler.step()
        terms = {"loss": loss, "top1": (cos.detach().argmax(1) == labels).float().mean()}
        if distill is not None:
            terms["distill"] = distill.detach()
        return StepResult(loss, terms, applied)

    def state_dicts(self) -> dict[str, Any]:
        """Optimiser, scheduler and scaler state for last.pt."""
        return {"optimizer": self.update.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.update.scaler.state_dict()}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.update.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.update.scaler.load_state_dict(checkpoint["scaler"])


class ArcFaceTrainer:
    """One run of the ArcFace loop: model, head, data and the stages run so far."""

    def __init__(self, book: Bookkeeper, preset: Preset, runtime: Runtime, model: EdgeFace, train_split: PairedSplit,
                 val_split: PairedSplit, field_name: str, inputs: InputFn, generator: torch.Generator,
                 resume: Resume | None = None) -> None:
        self.book, self.preset, self.runtime, self.model = book, preset, runtime, model
        self.ctx: Context = book.ctx
        self.device = book.device
        fine_tuning = field_name == "vlr"        # pre-training trains on HR: no camera, no teacher
        self.camera = camera_from_config(preset.degrade) if fine_tuning else None
        self.train, self.val, note = self._labelled(train_split, val_split, field_name)
        distributed.check_split_size(len(self.train), "train", self.ctx)
        distributed.check_split_size(len(self.val), "val", self.ctx)
        book.log(note)
        cfg = preset.finetune
        self.distill = cfg.lambda_distill if fine_tuning else 0.0
        if self.distill > 0:   # the base recogniser, before any fine-tuning (and before a resume loads its state)
            self.train.teacher = teacher_embeddings(model, closed_set(train_split, val_split, "hr")[0].images,
                                                    runtime, cfg.batch_size)
            book.log(f"distillation: {len(self.train)} HR teacher embeddings from the base recogniser "
                     f"(finetune.lambda_distill {self.distill:g})")
        self.classes = list(train_split.classes)
        head = cfg.head if fine_tuning else "arcface"
        self.head = margin_head(head, EMBEDDING_DIM, len(self.classes), cfg.arcface_scale,
                                cfg.arcface_margin).to(self.device)
        self.net = ArcFaceNet(model, self.head, cfg.label_smoothing, self.distill)
        self.inputs, self.generator = inputs, generator
        self.augment = FinetuneAugment.from_config(cfg)
        self.feeder = BatchFeeder(self.device)   # uint8 batches onto the device (async from pinned memory)
        self.stages: dict[str, StageResult] = {}
        self.extra: dict[str, Any] = {}
        self.resume = resume
        if resume is not None:
            self.model.load_state_dict(resume.checkpoint["state_dict"])
            self.head.load_state_dict(resume.checkpoint["head"])
            self.stages = {k: StageResult(**v) for k, v in resume.checkpoint.get("stages", {}).items()}
            restore_rng(resume.checkpoint["rng"], generator)
        book.log(f"{book.job}: EdgeFace {model.variant} ({count_all_parameters(model):,} parameters), "
                 f"{len(self.classes)} identities, {len(self.train)} train / {len(self.val)} val images on "
                 f"{self.device} (AMP {runtime.amp_dtype or 'off'}); {self.ctx.world_size} process(es), global "
                 f"batch {cfg.batch_size * self.ctx.world_size}; run directory {book.run.path}")

    def _labelled(self, train_split: PairedSplit, val_split: PairedSplit, field_name: str
                  ) -> tuple[LabelledImages, LabelledImages, str]:
        """Closed-set train and val; through a camera, train keeps HR (the step makes the VLR) and val gets its
        fixed camera images (seeded per position, the same every epoch and for every row)."""
        if self.camera is None:
            return closed_set(train_split, val_split, field_name)
        train, val, note = closed_set(train_split, val_split, "hr")
        val = LabelledImages(camera_images(val.images, self.preset.vlr_size, self.camera, self.preset.runtime.seed,
                                           "finetune-val"), val.labels)
        return train, val, note + f"; camera ([degrade]) {self.camera.to_spec()}: VLR inputs made from HR every step"

    # -- a stage

    def run_stage(self, stage: str, epochs: int, *, train_backbone: bool, patience: int) -> StageResult:
        """Train ``epochs`` epochs of ``stage`` (or what remains of it after a resume) through the epoch loop."""
        result = self.stages.setdefault(stage, StageResult())
        state = self.book.state
        if epochs <= 0 or (stage in state.stages_done and not (state.stage == stage and state.epoch < epochs)):
            return result
        resuming = state.stage == stage
        cfg = self.preset.finetune
        stage_trainer = ArcFaceStage(self, stage, result, self._stage_step(stage, epochs, train_backbone), train_backbone)
        if resuming and self.resume is not None and self.resume.checkpoint.get("optimizer") is not None:
            stage_trainer.step_once.restore(self.resume.checkpoint)
        fitted = fit(self.book, stage_trainer, Stage(stage, epochs, len(self.train), cfg.batch_size,
                                                     "finetune.batch_size", self.preset.runtime.seed, patience,
                                                     "finetune.early_stop_patience", "val top-1"), self.generator)
        result.early_stopped = result.early_stopped or fitted.early_stopped
        return result

    def _stage_step(self, stage: str, epochs: int, train_backbone: bool) -> "ArcFaceStep":
        """The stage's step: what requires grad, its optimiser, its schedule (stage 1 keeps head_lr constant;
        stage 2 and pre-training decay it, cosine), its scaler, and the DDP wrap of what trains now."""
        self.model.requires_grad_(train_backbone)
        net = distributed.wrap(self.net, self.ctx, self.device)  # per stage: DDP syncs what requires grad now
        optimizer = arcface_optimizer(self.preset, stage, train_backbone, self.model, self.head, self.device)
        steps = math.ceil(len(self.train) / (self.preset.finetune.batch_size * self.ctx.world_size))
        scheduler = None
        if train_backbone:
            warmup = PRETRAIN_WARMUP_EPOCHS * steps if stage == "pretrain" and epochs > 1 else 0
            scheduler = warmup_cosine(optimizer, warmup, epochs * steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.runtime.needs_grad_scaler)
        update = OptimizerUpdate(optimizer, scaler, [p for g in optimizer.param_groups for p in g["params"]],
                                 math.inf, self.book.nonfinite)    # no clipping; the norm catches non-finite steps
        return ArcFaceStep(net, update, scheduler, self.augment, self.feeder, self.inputs, self.runtime, self.camera,
                           self.preset.vlr_size)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Closed-set val: loss (with margin and smoothing, like training), top-1 and prediction entropy."""
        self.model.eval()
        self.head.eval()
        cfg = self.preset.finetune
        sums = Sums()
        histogram = torch.zeros(len(self.classes), dtype=torch.long, device=self.device)
        for index in distributed.shard(torch.arange(len(self.val)), self.ctx).split(cfg.batch_size):
            index = index.to(self.val.images.device)
            labels = self.val.labels[index].to(self.device)
            with self.runtime.autocast():
                embeddings = self.model(prepare_input(self.inputs(self.val.images[index].to(self.device))))
            cos = self.head.cosine(embeddings)
            logits = self.head.margin_logits(cos, labels, embeddings.detach().float().norm(dim=1))
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
            predicted = cos.argmax(1)
            sums.add({"loss": loss, "top1": (predicted == labels).float().mean()}, len(index))
            histogram += torch.bincount(predicted, minlength=len(self.classes))
        histogram = distributed.all_reduce_sum(histogram, self.ctx)
        return {**sums.means(self.ctx), "entropy": histogram_entropy(histogram)}

    # -- checkpoints and the end

    def _checkpoint(self, stage: str, epoch: int, val_values: dict[str, float] | None) -> dict[str, Any]:
        return edgeface_checkpoint(self.model, head=self.head, classes=self.classes, job=self.book.job, stage=stage,
                                   epoch=epoch, val=dict(val_values or {}), preset=self.preset.name,
                                   arcface={"scale": self.head.scale, "margin": self.head.margin,
                                            "head": self.head.kind},
                                   camera=spec_text(self.camera),
                                   lambda_distill=self.distill,
                                   stages={k: asdict(v) for k, v in self.stages.items()}, **self.extra)

    def finish(self, *, stopped: bool) -> Finished:
        return self.book.finish(self.summary(stopped=stopped), stopped=stopped)

    def summary(self, *, stopped: bool) -> dict[str, Any]:
        def best(stage: str) -> float | None:
            result = self.stages.get(stage)
            return result.best_top1 if result and result.epochs_run else None

        state = self.book.state
        out: dict[str, Any] = ({"stage1_best_top1": best("stage1"), "stage2_best_top1": best("stage2")}
                               if "pretrain" not in self.stages else {"pretrain_best_top1": best("pretrain")})
        out.update({
            "best_val_top1": state.best_score if state.best_stage else None,
            "best_stage": state.best_stage,
            "best_epoch": state.best_epoch,
            "epochs_run": sum(r.epochs_run for r in self.stages.values()),
            "early_stopped": any(r.early_stopped for r in self.stages.values()),
            "parameters": count_all_parameters(self.model),
            "head_parameters": count_all_parameters(self.head),
            "variant": self.model.variant,
            "head": self.head.kind,
            "camera": spec_text(self.camera),
            "lambda_distill": self.distill,
            "identities": len(self.classes),
            "train_images": len(self.train),
            "val_images": len(self.val),
            "global_batch": self.preset.finetune.batch_size * self.ctx.world_size,
            "device": str(self.device),
            "amp": str(self.runtime.amp_dtype).replace("torch.", "") if self.runtime.amp_dtype else "off",
            "stopped": stopped,
            **self.book.summary_extra(),
            **self.extra,
        })
        return out


@dataclass
class ArcFaceStage:
    """What the epoch loop (``engine.train.loop.fit``) needs of one ArcFace stage: the step, closed-set
    validation, the score (val top-1, ties to the lower val loss), checkpoints and the stage's record."""
    trainer: ArcFaceTrainer
    stage: str
    result: StageResult
    step_once: ArcFaceStep
    train_backbone: bool

    def train_mode(self) -> None:
        self.trainer.model.train(self.train_backbone)
        self.trainer.head.train()

    def step(self, index: torch.Tensor, generator: torch.Generator) -> StepResult:
        return self.step_once(self.trainer.train, index, generator)

    def learning_rate(self) -> float:
        return self.step_once.update.optimizer.param_groups[0]["lr"]

    def validate(self) -> dict[str, float]:
        return self.trainer.validate()

    def check_validation(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        if math.isfinite(values["loss"]):
            return
        raise WorkbenchError(
            f"{self.trainer.book.job} {stage} diverged in epoch {epoch} (non-finite val loss). Lower the learning "
            "rate of this stage (finetune.head_lr, backbone_lr, head_lr_stage2 or pretrain_lr), or "
            "finetune.arcface_scale / arcface_margin (e.g. scale 32, margin 0.35)"
            + (", or set runtime.amp = \"bf16\" or \"off\" instead of fp16" if self.step_once.update.scaler.is_enabled()
               else "") + ".")

    def score(self, values: dict[str, float]) -> tuple[float, ...]:
        return (values["top1"], -values["loss"])

    def best_checkpoint(self, stage: str, epoch: int, values: dict[str, float]) -> dict[str, Any]:
        return self.trainer._checkpoint(stage, epoch, values)

    def last_checkpoint(self) -> dict[str, Any]:
        state, step_once = self.trainer.book.state, self.step_once
        return {**self.trainer._checkpoint(self.stage, state.epoch, state.last_values), **step_once.state_dicts()}

    def epoch_end(self, stage: str, epoch: int, values: dict[str, float], improved: bool) -> None:
        self.result.epochs_run = epoch
        if improved:
            self.result.best_top1, self.result.best_epoch = values["top1"], epoch


@torch.no_grad()
def teacher_embeddings(model: EdgeFace, hr: torch.Tensor, runtime: Runtime, batch_size: int) -> torch.Tensor:
    """The frozen recogniser's flip-averaged embeddings of uint8 HR images (resized for it; each the mean of the
    unit embeddings of the face and its mirror image, so that a student shown a flipped face by the augmentation
    is pulled towards the same target), float32 on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in hr.split(max(batch_size, 64)):
        images = resize_for_recogniser(chunk.to(device).float().div_(255.0))
        with runtime.autocast():
            both = model(prepare_input(torch.cat([images, images.flip(-1)]))).float()
        pair = F.normalize(both, dim=1).view(2, len(images), -1)
        out.append(F.normalize(pair.sum(0), dim=1))
    model.train(was_training)
    return torch.cat(out)


def load_splits(root: Path, preset: Preset, runtime: Runtime, emit: Emit, job: str) -> tuple[PairedSplit, PairedSplit]:
    """train and val, placed on the device when they fit beside the job (else pinned host memory)."""
    def log(message: str) -> None:
        emit(Log(job, message))

    splits = []
    for name in ("train", "val"):
        split = load_split(root, name, preset.vlr_size, preset.data.hr_size, log=log)
        log(f"{split.summary()} from {root}")
        splits.append(split)
    (train, val), _ = place_splits(splits, runtime.device, job_bytes=estimate_job_bytes(preset.finetune.batch_size),
                                   on_device=preset.data.cache_on_device, log=log)
    return train, val
