"""Follow and stop a job that another process owns, from its run directory alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine import events as ev
from engine import presets as P
from engine.runs.follow import RunFollower
from engine.runs.status import run_state
from waiting import wait_until

TINY = {"data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "runtime.num_threads": 1,
        "dsr.epochs": 200, "dsr.batch_size": 4, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
        "dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "dsr.early_stop_patience": 0}



def test_attach_follows_a_headless_run_and_stop_ends_it_cleanly(tmp_path, demo_root):
    from workbench.cli.main import main

    preset = P.save(P.load("cpu-demo").with_changes({**TINY, "runtime.runs_dir": str(tmp_path / "runs")}),
                    tmp_path / "tiny.toml")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", "train-dsr", "--preset", str(preset),
                             "--data", str(demo_root), "--run-dir", str(run_dir)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: run_state(run_dir) == "running" and (run_dir / "metrics.jsonl").is_file(), "the first epoch")
        follower = RunFollower(run_dir)
        seen: list = []
        wait_until(lambda: seen.extend(follower.poll()) or any(isinstance(e, ev.Metrics) and e.split == "val"
                                                          for e in seen), "val metrics through the follower")
        assert any(isinstance(e, ev.Log) and "DSR 16x16" in e.message for e in seen)   # the log, from log.jsonl
        progress = [e for e in seen if isinstance(e, ev.Progress)]                     # from progress.jsonl
        assert progress and all(e.loss is not None and e.loss > 0 and e.images_per_second > 0 for e in progress)
        assert progress[-1].epochs == 200 and progress[-1].eta_seconds is not None
        assert not any(isinstance(e, (ev.Finished, ev.Failed)) for e in seen)
        assert main(["stop", str(run_dir), "--wait", "60"]) == 0
        assert proc.wait(timeout=60) == 130, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_state(run_dir) == "stopped"
    assert (run_dir / "last.pt").is_file()
    ends = [e for e in follower.poll() if isinstance(e, (ev.Finished, ev.Failed))]
    assert len(ends) == 1 and isinstance(ends[0], ev.Finished) and ends[0].stopped
    assert json.loads((run_dir / "summary.json").read_text())["stopped"] is True


def test_stop_and_attach_refuse_what_is_not_a_live_run(tmp_path, capsys):
    from workbench.cli.main import main

    assert main(["stop", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    run = tmp_path / "old"
    run.mkdir()
    P.save(P.load("cpu-demo"), run / "preset.toml")
    (run / "summary.json").write_text(json.dumps({"stopped": False}))
    assert main(["stop", str(run)]) == 2
    assert "not running (its state is finished)" in capsys.readouterr().err


def test_a_resume_cuts_progress_jsonl_back_to_its_checkpoint_like_metrics(tmp_path):
    from engine.runs.run_dir import PROGRESS_FILE, RunDir

    run = RunDir(tmp_path)
    for step in (5, 10, 15, 20):
        run.log_progress(ev.Progress("train-dsr", "dsr", 1, 2, step, 20, 50.0, 3.0, 0.5), global_step=step)
    with open(tmp_path / PROGRESS_FILE, "a") as handle:
        handle.write('{"global_step": 2')                    # a line torn by a kill
    run.truncate_metrics(10)
    lines = (tmp_path / PROGRESS_FILE).read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in lines] == [5, 10]
    (tmp_path / "status.json").write_text(json.dumps({"job": "train-dsr", "state": "running", "pid": os.getpid()}))
    (tmp_path / "preset.toml").write_text("")
    events = [e for e in RunFollower(tmp_path).poll() if isinstance(e, ev.Progress)]
    assert [(e.step, e.loss, e.eta_seconds) for e in events] == [(5, 0.5, 3.0), (10, 0.5, 3.0)]


def test_a_followed_pipeline_stage_carries_the_pipelines_stage_n_of_n_and_overall_eta(tmp_path):
    """Issue 26, defect 5, for a pipeline followed on disk (the app's own-process p, or attach)."""
    import socket

    from engine.runs.run_dir import RunDir

    root, stage = tmp_path / "pipe", tmp_path / "dsr-stage"
    for folder in (root, stage):
        folder.mkdir()
        (folder / "preset.toml").write_text("")
    running = {"state": "running", "pid": os.getpid(), "host": socket.gethostname()}
    (root / "status.json").write_text(json.dumps({**running, "job": "pipeline", "stage": "train-dsr", "part": 2,
                                                  "parts": 4, "overall_eta_seconds": 300.0}))
    (root / "summary.json").write_text(json.dumps({"stage_runs": {"train-dsr": str(stage)}}))
    (stage / "status.json").write_text(json.dumps({**running, "job": "train-dsr"}))
    RunDir(stage).log_progress(ev.Progress("train-dsr", "dsr", 1, 2, 5, 20, 50.0, 30.0, 0.5), global_step=5)
    progress = [e for e in RunFollower(root).poll() if isinstance(e, ev.Progress)]
    assert [(e.stage, e.part, e.parts, e.eta_seconds, e.overall_eta_seconds) for e in progress] == [
        ("dsr", 2, 4, 30.0, 300.0)]
