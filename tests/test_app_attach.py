"""The app attaches to runs other processes own, stops them cleanly, and starts jobs detached.

Real ``train-dsr`` processes on the tiny demo data (the TINY approach of tests/test_attach.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from textual.widgets import DataTable, TabbedContent

from engine import presets as P
from engine.runs.status import read_status, request_stop, run_state
from workbench.app.app import WorkbenchApp
from engine.jobs.process import OUTPUT_FILE, command
from engine.events import Log
from workbench.app.messages import JobEvents
from workbench.app.widgets.dialogs import ConfirmDialog
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.run_history import RunHistory

from app_helpers import NoGpuProbe, capture_notes, wait_for
from run_factory import write_run
from waiting import wait_until

TINY = {"data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "runtime.num_threads": 1,
        "dsr.epochs": 200, "dsr.batch_size": 4, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
        "dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "dsr.early_stop_patience": 0}
WIDE = (120, 40)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def tiny(tmp_path):
    """A saved tiny preset whose runs go to tmp_path/runs."""
    return P.save(P.load("cpu-demo").with_changes({**TINY, "runtime.runs_dir": str(tmp_path / "runs")}),
                  tmp_path / "tiny.toml")


def start_headless(preset_path, data, run_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench.cli.main", "train-dsr", "--preset", str(preset_path),
                             "--data", str(data), "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)



def make(preset, data, **kwargs) -> WorkbenchApp:
    return WorkbenchApp(preset, data=str(data), probe_factory=NoGpuProbe, cursor_blink=False, remember=False,
                        **kwargs)


async def highlight(pilot, run_dir) -> tuple[RunHistory, DataTable]:
    """The Runs tab, re-read, with ``run_dir`` highlighted and the table focused."""
    app = pilot.app
    app.query_one(TabbedContent).active = "tab-runs"
    history = app.query_one(RunHistory)
    history.reload(app.preset.runtime.runs_dir)
    table = history.query_one("#runs-table", DataTable)
    table.focus()
    table.move_cursor(row=[row.path for row in history.shown].index(run_dir))
    await pilot.pause()
    return history, table


async def test_app_attaches_to_a_headless_run_fills_charts_and_stops_it_cleanly(tiny, demo_root, tmp_path):
    run_dir = tmp_path / "runs" / "headless-train-dsr"
    proc = start_headless(tiny, demo_root, run_dir)
    seen = []
    try:
        wait_until(lambda: run_state(run_dir) == "running", "the headless run to start")
        app = make(P.load(tiny), demo_root)
        async with app.run_test(size=WIDE, message_hook=seen.append) as pilot:
            notes = capture_notes(app)
            history, table = await highlight(pilot, run_dir)
            state = table.get_cell_at((table.cursor_row, table.get_column_index("state")))
            assert str(state) == "running"
            await pilot.press("a")
            assert app.jobs.following and app.jobs.attached == run_dir
            panel = app.query_one(JobPanel)
            assert panel.state == "running" and "attached" in panel.job
            assert app.query_one(TabbedContent).active == "tab-charts"
            await wait_for(pilot, lambda: app.buffers.series("dsr", "val", "psnr"), timeout=60,
                           what="val PSNR of the attached run in the chart buffers")
            assert 5.0 < app.buffers.series("dsr", "val", "psnr")[0][1] < 60.0
            logs = [e for m in seen if isinstance(m, JobEvents) for e in m.events if isinstance(e, Log)]
            assert any("DSR 16x16" in log.message for log in logs)                      # its log, in batches
            await wait_for(pilot, lambda: panel.last is not None and panel.last.epochs == 200, timeout=30,
                           what="progress from the run's status.json")
            await pilot.press("t")                       # the app's own jobs wait while attached
            assert not app.jobs.detached_jobs and app.jobs.attached == run_dir and "attached" in notes[-1]
            await pilot.press("D")                       # detach: the run goes on; a attaches again
            await wait_for(pilot, lambda: not app.jobs.running, what="the follower to stop")
            assert panel.state == "detached" and proc.poll() is None and run_state(run_dir) == "running"
            await highlight(pilot, run_dir)
            await pilot.press("a")
            assert app.jobs.following and app.jobs.attached == run_dir
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmDialog) and f"pid {proc.pid}" in app.screen.question
            await pilot.press("y")
            # the request is on disk until the run ends (its end removes it, so none stays behind)
            assert panel.state in ("stopping", "stopped") and ((run_dir / "stop.request").exists()
                                                               or run_state(run_dir) != "running")
            await wait_for(pilot, lambda: not app.jobs.running, timeout=60, what="the attached run to end")
            assert panel.state == "stopped" and not app.jobs.following
            assert any(str(run_dir / "last.pt") in note for note in notes), notes   # the stop toast names last.pt
        assert proc.wait(timeout=60) == 130, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run_state(run_dir) == "stopped" and (run_dir / "last.pt").is_file()


async def test_attaching_to_a_finished_or_killed_run_says_why(tiny, demo_root, tmp_path):
    runs = tmp_path / "runs"
    finished = write_run(runs, "20260101-100000-tiny-train-dsr", P.load(tiny), "train-dsr",
                         status={"state": "finished"}, summary={"stopped": False})
    killed = runs / "killed-train-dsr"
    proc = start_headless(tiny, demo_root, killed)
    try:
        wait_until(lambda: run_state(killed) == "running", "the run to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert read_status(killed)["state"] == "running"          # the process never ended its run
    app = make(P.load(tiny), demo_root)
    async with app.run_test(size=WIDE) as pilot:
        notes = capture_notes(app)
        history, table = await highlight(pilot, killed)
        states = {row.path: row.state for row in history.shown}
        assert states == {killed: "dead", finished: "finished"}
        assert str(table.get_cell_at((table.cursor_row, table.get_column_index("state")))) == "dead"
        await pilot.press("a")
        assert not app.jobs.following and not app.jobs.running
        assert "not running" in notes[-1] and f"train-dsr --resume {killed}" in notes[-1]
        await highlight(pilot, finished)
        await pilot.press("a")
        assert not app.jobs.following and "not running" in notes[-1] and "finished" in notes[-1]


async def test_a_job_started_detached_outlives_the_app(tiny, demo_root, tmp_path, capsys):
    app = make(P.load(tiny), demo_root)
    async with app.run_test(size=WIDE) as pilot:
        app.preset = app.preset.with_changes({"dsr.epochs": 300})        # unsaved: written to the run
        await pilot.press("t")                                            # own process: the default
        assert len(app.jobs.detached_jobs) == 1 and app.jobs.following
        job = app.jobs.detached_jobs[0]
        run_dir = job.run_dir
        assert run_dir.parent == tmp_path / "runs" and job.output == run_dir / OUTPUT_FILE
        await wait_for(pilot, lambda: app.buffers.series("dsr", "val", "psnr"), timeout=60,
                       what="val metrics of the detached job")
        assert app.query_one(JobPanel).state == "running"
        await pilot.press("q")            # asks: the unsaved preset is lost, the job keeps running
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        question = app.screen.question
        assert "Unsaved changes" in question and "keeps running" in question and f"pid {job.proc.pid}" in question
        await pilot.press("n")
        app.preset = app.saved                                            # nothing unsaved: q asks about the job
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "Unsaved" not in app.screen.question
        assert "own process" in app.screen.question and "keeps running" in app.screen.question
        await pilot.press("y")
        await pilot.pause()
    said = capsys.readouterr().err.replace("\n", "")                      # printed once the app has closed
    assert f"train-dsr keeps running in {run_dir}" in said and f"vlr-workbench stop {run_dir}" in said
    try:
        assert app.return_code == 0
        time.sleep(1.5)
        assert job.proc.poll() is None and run_state(run_dir) == "running"   # the app is gone, the job is not
        assert P.load(run_dir / "preset.toml").dsr.epochs == 300
        reopened = make(P.load(tiny), demo_root)      # the app opened again follows the job that outlived it
        async with reopened.run_test(size=WIDE) as pilot:
            panel = reopened.query_one(JobPanel)
            await wait_for(pilot, lambda: reopened.jobs.attached == run_dir and panel.state == "running",
                           what="the running own-process job followed again")
            await pilot.press("D")
            await wait_for(pilot, lambda: panel.state == "detached", what="detached")
            request_stop(run_dir)                      # as `vlr-workbench stop RUN` does
            await wait_for(pilot, lambda: panel.state == "stopped", timeout=60, what="the panel to say it stopped")
        assert job.proc.wait(timeout=60) == 130, job.output_tail()
    finally:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()
    assert run_state(run_dir) == "stopped" and (run_dir / "last.pt").is_file()
    assert "stopped" in (run_dir / OUTPUT_FILE).read_text()


async def test_a_detached_job_that_cannot_start_shows_its_error(tiny, tmp_path):
    app = make(P.load(tiny), tmp_path / "no-such-data")
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: not app.jobs.running, timeout=60, what="the detached job to exit")
        panel = app.query_one(JobPanel)
        assert panel.state == "failed"
        detail = str(app.query_one("#job-detail").render())
        assert "exited with code 2" in detail and "no-such-data" in detail


def test_an_own_process_job_gets_its_run_directory_on_the_command_line(tmp_path):
    argv = command("pipeline", tmp_path / "p.toml", "data", tmp_path / "pipe", {"baselines": True})
    assert argv[1:] == ["-m", "workbench.cli.main", "pipeline", "--preset", str(tmp_path / "p.toml"), "--data",
                        "data", "--run-dir", str(tmp_path / "pipe"), "--baselines"]
    argv = command("finetune", tmp_path / "p.toml", "data", tmp_path / "run", {"dsr": "best.pt", "edgeface": None})
    assert argv[1:] == ["-m", "workbench.cli.main", "finetune", "--preset", str(tmp_path / "p.toml"), "--data",
                        "data", "--run-dir", str(tmp_path / "run"), "--dsr", "best.pt"]
