"""The CLI's progress rows: a finished epoch shows no ETA (issue 17, defect 11)."""

from __future__ import annotations

from engine.events import Progress
from workbench.cli.job_runner import console_progress


def test_a_running_epoch_shows_its_eta_and_a_finished_one_does_not():
    progress, emit = console_progress()
    emit(Progress("train-dsr", "dsr", 1, 3, 5, 10, 12.0, 90.0, 0.5))
    emit(Progress("train-dsr", "dsr", 2, 3, 5, 10, 12.0, 45.0, 0.4))
    emit(Progress("train-dsr", "dsr", 1, 3, 10, 10, 12.0, 60.0, 0.3))   # epoch 1 ends
    first, second = progress.tasks
    assert "ETA" not in first.fields["info"] and "loss 0.3" in first.fields["info"]
    assert "ETA 0:00:45" in second.fields["info"]
