"""The epoch loop, once for every trainer: ``fit`` walks the epochs and steps of one stage.

A trainer supplies what differs (``EpochTrainer``): its step, validation, score, checkpoint contents
and what it does after an epoch (a sample strip, its own stage record). The loop does the rest, in
this order each epoch: the epoch's sample order (the saved one inside a resumed epoch) -> each rank's
slice of every global batch through the trainer's step (stop requests checked before each step,
Progress every few) -> train metrics, validation (inside the out-of-memory guard) -> metrics.jsonl ->
the trainer's divergence check -> resume position, best score and early-stopping count -> best.pt ->
the trainer's epoch end -> last.pt -> early stop. A stop request saves a resumable last.pt (with the
unfinished epoch's partial sums) and raises ``JobStopped`` to the trainer. Only this loop and
``Bookkeeper.step_done`` write the resume position (``LoopState``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from engine import distributed
from engine.errors import JobStopped
from engine.train.bookkeeper import Bookkeeper
from engine.train.loop_state import Sums
from engine.train.update import StepResult


class EpochTrainer(Protocol):
    """What a trainer gives the loop for one stage."""

    def train_mode(self) -> None: ...

    def step(self, index: torch.Tensor, generator: torch.Generator) -> StepResult: ...

    def learning_rate(self) -> float: ...

    def validate(self) -> dict[str, float]: ...

    def check_validation(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        """Raise a WorkbenchError (with the advice) when the validation values say training diverged."""

    def score(self, values: dict[str, float]) -> tuple[float, ...]:
        """Higher is better; the first element alone decides early stopping, the whole tuple best.pt."""

    def best_checkpoint(self, stage: str, epoch: int, values: dict[str, float]) -> dict[str, Any]: ...

    def last_checkpoint(self) -> dict[str, Any]:
        """last.pt's contents beyond the loop position and random state (weights, optimiser, scheduler...)."""

    def epoch_end(self, stage: str, epoch: int, values: dict[str, float], improved: bool) -> None: ...


@dataclass(frozen=True)
class Stage:
    """One stage of a run: its name, length, data size, batch and early stopping."""
    name: str                 # "dsr", "pretrain", "stage1", "stage2"
    epochs: int
    images: int               # training images per epoch (all ranks)
    batch_size: int           # per rank
    batch_key: str            # the preset key named in out-of-memory advice
    seed: int                 # runtime.seed: sample orders and augmentation draws
    patience: int = 0         # epochs without a better score before an early stop (0: never)
    patience_key: str = ""
    score_name: str = "score"


@dataclass(frozen=True)
class FitResult:
    epochs_run: int
    early_stopped: bool


def fit(book: Bookkeeper, trainer: EpochTrainer, stage: Stage, generator: torch.Generator) -> FitResult:
    """Train ``stage`` (or what remains of it after a resume); a stage already done returns at once, unless it
    is the run's last stage given more epochs than it ran (a finished run extended with --resume)."""
    state, ctx = book.state, book.ctx
    extended = state.stage == stage.name and state.epoch < stage.epochs   # a finished stage given more epochs
    if stage.name in state.stages_done and extended:
        state.stages_done.remove(stage.name)
    if stage.epochs <= 0 or stage.name in state.stages_done:
        return FitResult(0, False)
    if state.stage != stage.name:
        state.stage, state.epoch, state.step_in_epoch, state.stale_epochs = stage.name, 0, 0, 0
        state.stage_best = -math.inf

    def save_last() -> None:
        book.save_last(trainer.last_checkpoint(), generator)

    sums, early_stopped = Sums(), False
    try:
        for epoch in range(state.epoch + 1, stage.epochs + 1):
            order = state.start_epoch(stage.name, epoch, stage.images, stage.seed)
            sums = Sums.resumed(state.epoch_sums, ctx)     # rank 0 carries every rank's share
            with book.oom_guard(stage.name, epoch, stage.batch_key, stage.batch_size):
                trainer.train_mode()
                _train_epoch(book, trainer, stage, epoch, order, sums, generator)
                book.check_epoch_trained(stage.name, epoch, sums.total_count(ctx))
                train_values = {**sums.means(ctx), "lr": trainer.learning_rate(),
                                "images_per_second": book.images_per_second}
                val_values = trainer.validate()
            book.report(stage.name, epoch, "train", train_values)
            book.report(stage.name, epoch, "val", val_values)
            trainer.check_validation(stage.name, epoch, val_values)
            improved = _end_epoch(book, trainer, stage.name, epoch, val_values)
            trainer.epoch_end(stage.name, epoch, val_values, improved)
            save_last()
            if stage.patience and state.stale_epochs >= stage.patience:
                early_stopped = True
                book.log(f"{stage.name}: early stop, no better {stage.score_name} for {state.stale_epochs} epochs "
                         f"({stage.patience_key} = {stage.patience})")
                break
    except JobStopped:
        book.on_stop(sums, save_last)
        raise
    state.stages_done.append(stage.name)
    save_last()
    return FitResult(state.epoch, early_stopped)


def _train_epoch(book: Bookkeeper, trainer: EpochTrainer, stage: Stage, epoch: int, order: torch.Tensor,
                 sums: Sums, generator: torch.Generator) -> None:
    """The epoch's remaining steps: each rank's slice of every global batch (from the resume point)."""
    state, ctx = book.state, book.ctx
    global_batch = stage.batch_size * ctx.world_size
    batches = distributed.global_batches(order, global_batch, ctx)
    book.restart_clock()
    for step in range(state.step_in_epoch + 1, len(batches) + 1):
        book.check_stop()
        index = distributed.shard(batches[step - 1], ctx)
        out = trainer.step(index, state.step_generator(generator, stage.seed, ctx.rank))
        sums.add(out.values, len(index), out.applied)
        left = (stage.epochs - epoch + 1) * stage.images - min(stage.images, step * global_batch)
        book.step_done(stage.name, epoch, stage.epochs, step, len(batches), len(index), left, out.loss)


def _end_epoch(book: Bookkeeper, trainer: EpochTrainer, stage: str, epoch: int, values: dict[str, float]) -> bool:
    """Advance the resume position, count epochs without improvement, write best.pt on a better score;
    whether the stage's score improved."""
    state = book.state
    state.end_epoch(epoch)
    state.last_values = values
    score = trainer.score(values)
    improved = score[0] > state.stage_best
    if improved:
        state.stage_best, state.stale_epochs = score[0], 0
    else:
        state.stale_epochs += 1
    best = trainer.score(state.best_values) if state.best_values else (-math.inf,)
    if score > best:
        state.best_score, state.best_values, state.best_stage, state.best_epoch = score[0], values, stage, epoch
        book.save("best.pt", trainer.best_checkpoint(stage, epoch, values))
    return improved
