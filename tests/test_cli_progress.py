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


def test_a_job_summary_prints_no_python_none(monkeypatch, capsys, tmp_path):
    """A summary value None (e.g. a pipeline without a DSR row: dsr_rank1) printed as "None"; it is "-"."""
    from engine.events import Finished
    from engine.jobs.registry import JobRequest
    from engine.presets import load
    from workbench.cli import job_runner

    summary = {"dsr_rank1": None, "bicubic_rank1": 0.5, "camera": "[unseen camera]", "stages": {"dsr": None}}
    monkeypatch.setattr(job_runner, "run_job", lambda request, emit, stop: Finished("pipeline", tmp_path, summary))
    assert job_runner.run_in_foreground(JobRequest("pipeline", load("cpu-demo"))) == 0
    lines = [" ".join(line.replace("│", " ").split()) for line in capsys.readouterr().out.splitlines()]
    assert "None" not in "\n".join(lines)
    assert "dsr_rank1 -" in lines and "bicubic_rank1 0.5" in lines and "camera [unseen camera]" in lines
