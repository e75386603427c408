"""Where a pipeline is as a whole: its stage n of N and an overall ETA, added to its stages' progress.

The overall ETA is the current stage's own ETA plus the epochs still ahead (later stages, later
folds) at the current stage's pace per epoch: a rough figure (stages differ in cost per epoch)
that the job panel shows with ``≈``. Stages without epochs (recogniser lookup, evaluate) count as
none.
"""

from __future__ import annotations

from dataclasses import replace

from engine.events import Progress
from engine.presets import Preset


def stage_epochs(preset: Preset, name: str) -> int:
    """The training epochs a pipeline stage runs (0: no epochs, or not known before it starts)."""
    if name == "train-dsr":
        return preset.dsr.epochs
    if name.startswith("finetune"):
        return preset.finetune.stage1_epochs + preset.finetune.stage2_epochs
    return 0


class PipelineProgress:
    def __init__(self, names: tuple[str, ...], preset: Preset, folds: int | None) -> None:
        self.names, self.folds = names, folds or 1
        self.epochs = [stage_epochs(preset, name) for name in names]
        self.index, self.fold = 0, 1

    def at(self, name: str, fold: int | None) -> dict[str, int]:
        """The stage now running; the status fields that say so."""
        self.index, self.fold = self.names.index(name), fold or 1
        return {"part": self.index + 1, "parts": len(self.names)}

    def epochs_after(self) -> int:
        """Epochs of the later stages of this fold and of every later fold."""
        return sum(self.epochs[self.index + 1:]) + (self.folds - self.fold) * sum(self.epochs)

    def annotate(self, event: Progress) -> Progress:
        """``event`` of the current stage with the pipeline's part, parts and overall ETA."""
        overall = None
        remaining_steps = (max(event.epochs, 1) - max(event.epoch, 1)) * event.steps + (event.steps - event.step)
        if event.eta_seconds is not None and event.steps:
            per_epoch = event.eta_seconds / remaining_steps * event.steps if remaining_steps > 0 else 0.0
            overall = event.eta_seconds + self.epochs_after() * per_epoch
        return replace(event, part=self.index + 1, parts=len(self.names), overall_eta_seconds=overall)
