"""The ArcFace training loop shared by fine-tuning (``finetune``) and pre-training (``pretrain``).

A run is one or more stages (fine-tuning: ``stage1`` head only, then ``stage2`` whole model;
pre-training: ``pretrain``). Each stage: optimiser and schedule of its own -> epochs of shuffled
global batches (each rank its slice) -> recogniser inputs on the device -> augmentation at 112x112
-> AMP forward, ArcFace margin loss -> step (skipped when non-finite); then closed-set validation
(loss, top-1, prediction entropy), best.pt by val top-1 over the whole run, last.pt (resumable at
the exact step and stage), early stopping. The run directory, status, stop requests and
checkpoints belong to ``bookkeeping.Bookkeeper``.

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
from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Finished, Log
from engine.models.arcface import ArcFaceHead, arcface_loss
from engine.models.edgeface import EMBEDDING_DIM, EdgeFace, count_all_parameters, edgeface_checkpoint, prepare_input
from engine.models.edgeface import resize_for_recogniser
from engine.presets import Preset
from engine.data.placement import BatchFeeder, estimate_job_bytes, place_splits
from engine.runtime import Runtime, fused_adamw_kwargs
from engine.train.bookkeeping import Bookkeeper, Resume, Sums, restore_rng
from engine.train.schedule import warmup_cosine
from engine.train.update import OptimizerUpdate, StepResult

PRETRAIN_WARMUP_EPOCHS = 1

InputFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 batch on the device -> float [0, 1] recogniser input


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


def prediction_entropy(predicted: torch.Tensor, num_classes: int) -> float:
    """Entropy of the predicted-class histogram over ``log(num_classes)``: 0 = one class for everything."""
    return histogram_entropy(torch.bincount(predicted.flatten(), minlength=num_classes))


def histogram_entropy(counts: torch.Tensor) -> float:
    total = counts.sum()
    if counts.numel() < 2 or total == 0:
        return 0.0
    p = counts.float() / total
    return float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(counts.numel()))


class ArcFaceNet(nn.Module):
    """Recogniser and margin head as one module, so DistributedDataParallel keeps both in sync."""

    def __init__(self, model: EdgeFace, head: ArcFaceHead, label_smoothing: float) -> None:
        super().__init__()
        self.model, self.head, self.label_smoothing = model, head, label_smoothing

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, cosines) of a batch of recogniser inputs in [0, 1] at 112x112."""
        cos = self.head.cosine(self.model(prepare_input(images)))
        return arcface_loss(self.head.margin_logits(cos, labels), labels, self.label_smoothing), cos


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

    def __call__(self, train: LabelledImages, index: torch.Tensor, generator: torch.Generator) -> StepResult:
        """uint8 batch -> recogniser inputs (``inputs``: e.g. the frozen DSR) -> augmentation at 112x112 (fewer
        pixels than HR; the ops commute with the resize) -> AMP forward, ArcFace loss -> update -> schedule."""
        device = self.runtime.device
        labels = train.labels[index.to(train.labels.device, non_blocking=True)].to(device, non_blocking=True)
        images = resize_for_recogniser(self.inputs(self.feeder(train.images, index)))
        images = self.augment(images, generator).contiguous(memory_format=self.runtime.memory_format)
        with self.runtime.autocast():
            loss, cos = self.net(images, labels)
        applied = self.update(loss)
        if self.scheduler is not None:
            self.scheduler.step()
        return StepResult(loss, {"loss": loss, "top1": (cos.detach().argmax(1) == labels).float().mean()}, applied)


class ArcFaceTrainer:
    """One run of the ArcFace loop: model, head, data and the stages run so far."""

    def __init__(self, book: Bookkeeper, preset: Preset, runtime: Runtime, model: EdgeFace, train_split: PairedSplit,
                 val_split: PairedSplit, field_name: str, inputs: InputFn, generator: torch.Generator,
                 resume: Resume | None = None) -> None:
        self.book, self.preset, self.runtime, self.model = book, preset, runtime, model
        self.ctx: Context = book.ctx
        self.device = book.device
        self.train, self.val, note = closed_set(train_split, val_split, field_name)
        distributed.check_split_size(len(self.train), "train", self.ctx)
        distributed.check_split_size(len(self.val), "val", self.ctx)
        book.log(note)
        cfg = preset.finetune
        self.classes = list(train_split.classes)
        self.head = ArcFaceHead(EMBEDDING_DIM, len(self.classes), cfg.arcface_scale, cfg.arcface_margin).to(self.device)
        self.net = ArcFaceNet(model, self.head, cfg.label_smoothing)
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

    # -- a stage

    def run_stage(self, stage: str, epochs: int, *, train_backbone: bool, patience: int) -> StageResult:
        """Train ``epochs`` epochs of ``stage`` (or what remains of it after a resume)."""
        book, state, cfg = self.book, self.book.state, self.preset.finetune
        result = self.stages.setdefault(stage, StageResult())
        if epochs <= 0 or stage in state.stages_done:
            return result
        resuming = state.stage == stage
        if not resuming:
            state.stage, state.epoch, state.step_in_epoch, state.stale_epochs = stage, 0, 0, 0
        self.model.requires_grad_(train_backbone)
        net = distributed.wrap(self.net, self.ctx, self.device)  # per stage: DDP syncs what requires grad now
        optimizer = arcface_optimizer(self.preset, stage, train_backbone, self.model, self.head, self.device)
        global_batch = cfg.batch_size * self.ctx.world_size
        steps = math.ceil(len(self.train) / global_batch)
        scheduler = None
        if train_backbone:  # stage 1 keeps head_lr constant; stage 2 and pre-training decay it (cosine)
            warmup = PRETRAIN_WARMUP_EPOCHS * steps if stage == "pretrain" and epochs > 1 else 0
            scheduler = warmup_cosine(optimizer, warmup, epochs * steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.runtime.needs_grad_scaler)
        update = OptimizerUpdate(optimizer, scaler, [p for g in optimizer.param_groups for p in g["params"]],
                                 math.inf, book.nonfinite)    # no clipping; the norm catches non-finite steps
        step_once = ArcFaceStep(net, update, scheduler, self.augment, self.feeder, self.inputs, self.runtime)
        if resuming and self.resume is not None and self.resume.checkpoint.get("optimizer") is not None:
            optimizer.load_state_dict(self.resume.checkpoint["optimizer"])
            if scheduler is not None and self.resume.checkpoint.get("scheduler") is not None:
                scheduler.load_state_dict(self.resume.checkpoint["scheduler"])
            scaler.load_state_dict(self.resume.checkpoint["scaler"])

        def save_last() -> None:
            book.save_last({**self._checkpoint(stage, state.epoch, state.last_values),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "scaler": scaler.state_dict()}, self.generator)

        sums = Sums()
        try:
            for epoch in range(state.epoch + 1, epochs + 1):
                with book.oom_guard(stage, epoch, "finetune.batch_size", cfg.batch_size):
                    self.model.train(train_backbone)
                    self.head.train()
                    order = state.start_epoch(stage, epoch, len(self.train), self.preset.runtime.seed)
                    batches = distributed.global_batches(order, global_batch, self.ctx)
                    sums = Sums.resumed(state.epoch_sums, self.ctx)   # rank 0 carries every rank's share
                    book.restart_clock()
                    for step in range(state.step_in_epoch + 1, len(batches) + 1):
                        book.check_stop()
                        index = distributed.shard(batches[step - 1], self.ctx)
                        out = step_once(self.train, index,
                                       state.step_generator(self.generator, self.preset.runtime.seed, self.ctx.rank))
                        sums.add(out.values, len(index), out.applied)
                        left = (epochs - epoch + 1) * len(self.train) - min(len(self.train), step * global_batch)
                        book.step_done(stage, epoch, epochs, step, len(batches), len(index), left, out.loss)
                    book.check_epoch_trained(stage, epoch, sums.total_count(self.ctx))
                    train_values = {**sums.means(self.ctx), "lr": optimizer.param_groups[0]["lr"],
                                    "images_per_second": book.images_per_second}
                    val_values = self.validate()
                book.report(stage, epoch, "train", train_values)
                book.report(stage, epoch, "val", val_values)
                if not math.isfinite(val_values["loss"]):
                    raise WorkbenchError(
                        f"{book.job} {stage} diverged in epoch {epoch} (non-finite val loss). Lower the learning rate "
                        "of this stage (finetune.head_lr, backbone_lr, head_lr_stage2 or pretrain_lr), or "
                        "finetune.arcface_scale / arcface_margin (e.g. scale 32, margin 0.35)"
                        + (", or set runtime.amp = \"bf16\" or \"off\" instead of fp16" if scaler.is_enabled() else "")
                        + ".")
                state.end_epoch(epoch)
                state.last_values = val_values
                result.epochs_run = epoch
                if val_values["top1"] > result.best_top1:
                    result.best_top1, result.best_epoch, state.stale_epochs = val_values["top1"], epoch, 0
                else:
                    state.stale_epochs += 1
                # best.pt: the best val top-1 of the run; a tie (small val sets) goes to the lower val loss
                score = (val_values["top1"], -val_values["loss"])
                if score > (state.best_score, -state.best_values.get("loss", math.inf)):
                    state.best_score, state.best_values = val_values["top1"], val_values
                    state.best_stage, state.best_epoch = stage, epoch
                    book.save("best.pt", self._checkpoint(stage, epoch, val_values))
                save_last()
                if patience and state.stale_epochs >= patience:
                    result.early_stopped = True
                    book.log(f"{stage}: early stop, no better val top-1 for {state.stale_epochs} epochs "
                             f"(finetune.early_stop_patience = {patience})")
                    break
        except JobStopped:
            book.on_stop(sums, save_last)
            raise
        state.stages_done.append(stage)
        save_last()
        return result

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
            loss = F.cross_entropy(self.head.margin_logits(cos, labels), labels, label_smoothing=cfg.label_smoothing)
            predicted = cos.argmax(1)
            sums.add({"loss": loss, "top1": (predicted == labels).float().mean()}, len(index))
            histogram += torch.bincount(predicted, minlength=len(self.classes))
        histogram = distributed.all_reduce_sum(histogram, self.ctx)
        return {**sums.means(self.ctx), "entropy": histogram_entropy(histogram)}

    # -- checkpoints and the end

    def _checkpoint(self, stage: str, epoch: int, val_values: dict[str, float] | None) -> dict[str, Any]:
        return edgeface_checkpoint(self.model, head=self.head, classes=self.classes, job=self.book.job, stage=stage,
                                   epoch=epoch, val=dict(val_values or {}), preset=self.preset.name,
                                   arcface={"scale": self.head.scale, "margin": self.head.margin},
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
