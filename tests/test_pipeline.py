"""The pipeline job on the tiny demo data with a tiny preset: stage run dirs, files, keys, stop flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import presets as P
from engine.events import Finished, Log, Progress
from engine.jobs.registry import JobRequest, StopFlag, run_job

TINY = {
    "data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu",
    "dsr.epochs": 1, "dsr.batch_size": 16, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
    "finetune.pretrain_epochs": 1, "finetune.stage1_epochs": 1, "finetune.stage2_epochs": 1,
    "finetune.batch_size": 16, "runtime.edgeface_variant": "edgeface_xxs", "runtime.edgeface_weights": "",
}


def _tiny_preset(tmp_path: Path, **changes):
    return P.load("cpu-demo").with_changes({**TINY, "runtime.runs_dir": str(tmp_path / "runs"), **changes})


def _random_recogniser(folder: Path) -> Path:
    """A random edgeface_xxs file, so a test can skip the recogniser pre-training."""
    import torch

    from engine.io import atomic
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    torch.manual_seed(0)
    return atomic.torch_save(folder / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))


def test_pipeline_links_every_stage_and_writes_headline_numbers(tmp_path, demo_root):
    events = []
    result = run_job(JobRequest("pipeline", _tiny_preset(tmp_path), data=str(demo_root)), events.append)
    assert isinstance(result, Finished) and not result.stopped, getattr(result, "error", "")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "done"
    assert set(summary["stages"]) == {"recogniser", "pretrain", "train-dsr", "finetune", "evaluate"}
    assert Path(summary["recogniser"]).is_file()
    for stage in ("train-dsr", "finetune"):
        assert (Path(summary["stages"][stage]) / "best.pt").is_file()
    eval_doc = json.loads(Path(summary["eval_json"]).read_text())
    assert eval_doc["dsr"] is not None and eval_doc["protocol"]["dsr"] == \
        str(Path(summary["stages"]["train-dsr"]) / "best.pt")
    assert eval_doc["protocol"]["recogniser"] == str(Path(summary["stages"]["finetune"]) / "best.pt")
    for variant in ("dsr", "bicubic", "hr"):
        assert summary[f"{variant}_rank1"] == eval_doc[variant]["rank1"]
    # every stage's progress reached the caller, and the stages were announced in order
    assert {"train-dsr", "finetune", "evaluate"} <= {e.job for e in events if isinstance(e, Progress)}
    # ... each with the pipeline's stage n/N (issue 26, defect 5): recogniser, train-dsr, finetune, evaluate
    parts = {e.job: (e.part, e.parts) for e in events if isinstance(e, Progress)}
    assert parts["train-dsr"] == (2, 4) and parts["finetune"] == (3, 4) and parts["evaluate"] == (4, 4)
    assert any(e.overall_eta_seconds is not None for e in events if isinstance(e, Progress) and e.job == "train-dsr")
    announced = [e.message for e in events if isinstance(e, Log) and e.job == "pipeline" and "stage" in e.message]
    assert [m.split(": ")[1] for m in announced] == ["recogniser", "train-dsr", "finetune", "evaluate"]
    assert events[-1] is result
    # the one-line verdict a pipeline ends with (issue 38): DSR against the best bicubic row, with its figures
    from engine.sweep.margins import pipeline_verdict

    difference = eval_doc["comparisons"]["dsr_vs_bicubic"]["difference"]
    assert pipeline_verdict(result.summary).startswith("verdict: DSR ")
    assert f"{difference * 100:+.1f} [" in pipeline_verdict(result.summary)


@pytest.mark.parametrize("stop_at", ["before", "finetune"])
def test_stop_flag_ends_the_pipeline_with_a_stopped_summary(tmp_path, demo_root, stop_at):
    stop = StopFlag()
    if stop_at == "before":
        stop.set()

    def emit(event):
        if isinstance(event, Log) and event.job == "pipeline" and event.message.endswith(f": {stop_at}"):
            stop.set()

    preset = _tiny_preset(tmp_path, **{"runtime.edgeface_weights": str(_random_recogniser(tmp_path))})
    result = run_job(JobRequest("pipeline", preset, data=str(demo_root)), emit, stop)
    assert isinstance(result, Finished) and result.stopped
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert "evaluate" not in summary["stages"] and "eval_json" not in summary
    if stop_at == "finetune":
        assert (Path(summary["stages"]["train-dsr"]) / "best.pt").is_file()
        assert (Path(summary["stopped_run"]) / "last.pt").is_file()   # the stopped stage can be resumed
        assert summary["stages"]["recogniser"] is None   # the preset's weights file: no run dir of its own


def test_cli_pipeline_failure_exits_2_and_records_the_failed_stage(tmp_path, capsys):
    from workbench.cli.main import main

    preset_file = P.save(_tiny_preset(tmp_path), tmp_path / "tiny.toml")
    (tmp_path / "empty-data").mkdir()                      # a folder, but no dataset in it: a stage fails
    code = main(["pipeline", "--preset", str(preset_file), "--data", str(tmp_path / "empty-data")])
    assert code == 2
    assert "empty-data" in capsys.readouterr().err
    summary = json.loads(next((tmp_path / "runs").glob("*-tiny-pipeline/summary.json")).read_text())
    assert (summary["status"], summary["failed_stage"]) == ("failed", "recogniser")
    assert "empty-data" in summary["error"]


@pytest.mark.parametrize("data", ["a-file", "no-such-data"])
def test_pipeline_data_that_is_no_folder_is_refused_before_a_run_directory_is_made(data, tmp_path, capsys):
    """Issue 25: `pipeline --data FILE` left a failed run directory behind."""
    from workbench.cli.main import main

    preset_file = P.save(_tiny_preset(tmp_path), tmp_path / "tiny.toml")
    (tmp_path / "a-file").write_text("not a dataset")
    code = main(["pipeline", "--preset", str(preset_file), "--data", str(tmp_path / data)])
    err = capsys.readouterr().err
    assert code == 2 and data in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_pipeline_writes_exactly_the_given_run_dir_and_refuses_one_that_holds_a_pipeline(tmp_path, demo_root):
    """The app starts `p` in its own process with --run-dir: its log and preset live in the run itself."""
    from engine.events import Failed

    stop = StopFlag()
    stop.set()                                    # stopped at once: only the directory and summary matter here
    run_dir = tmp_path / "my-pipeline"
    preset = _tiny_preset(tmp_path)
    result = run_job(JobRequest("pipeline", preset, data=str(demo_root), options={"run_dir": str(run_dir)}),
                     lambda e: None, stop)
    assert isinstance(result, Finished) and result.run_dir == run_dir
    assert (run_dir / "preset.toml").is_file() and (run_dir / "summary.json").is_file()
    assert not (run_dir / "owner.lock").exists()                                  # released
    assert not list((tmp_path / "runs").glob("*-pipeline")) if (tmp_path / "runs").exists() else True
    again = run_job(JobRequest("pipeline", preset, data=str(demo_root), options={"run_dir": str(run_dir)}),
                    lambda e: None)
    assert isinstance(again, Failed) and "already holds a pipeline" in again.error and "--resume" in again.error


def test_a_pipeline_stopped_before_its_data_was_resolved_resumes_on_the_same_data(tmp_path, demo_root):
    """Killed early, a pipeline's summary must already name its data: a resume without --data once fell
    back to the preset's demo data and trained on other faces."""
    stop = StopFlag()
    stop.set()
    preset = _tiny_preset(tmp_path, **{"runtime.edgeface_weights": str(_random_recogniser(tmp_path))})
    first = run_job(JobRequest("pipeline", preset, data=str(demo_root)), lambda e: None, stop)
    assert isinstance(first, Finished) and first.stopped
    assert json.loads((first.run_dir / "summary.json").read_text())["data_root"] == str(demo_root)
    resumed = run_job(JobRequest("pipeline", preset, options={"resume": str(first.run_dir)}), lambda e: None)
    assert isinstance(resumed, Finished) and not resumed.stopped, getattr(resumed, "error", "")
    summary = json.loads((first.run_dir / "summary.json").read_text())
    assert summary["data_root"] == str(demo_root)
    dsr_run = Path(summary["stages"]["train-dsr"])
    import torch
    assert torch.load(dsr_run / "last.pt", weights_only=False)["data"]["root"] == str(demo_root)
