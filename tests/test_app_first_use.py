"""Regression tests of the app defects a new user hit (numbered as in the report): the Runs tab's keys
whatever has focus, runs appearing while the app is open, the two-run comparison, preset names with
'+', o with nothing overlaid, distinct chart ticks, the runs table at 80x24 and reaped own-process jobs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, TabbedContent, Tabs

import engine.presets
from engine.events import Progress
from engine.runs.run_dir import RunDir
from engine.presets import load, user_dir
from workbench.app.controllers import job_controller as attach_control
from engine.jobs.process import OUTPUT_FILE, DetachedJob
from workbench.app.run_columns import COLUMNS
from workbench.app.widgets import dialogs
from workbench.app.widgets.charts import MetricChart, linear_ticks
from workbench.app.widgets.dialogs import RunDiffDialog, SaveAsDialog
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.run_history import RunHistory

from app_helpers import capture_notes, make_app, wait_for
from run_factory import dsr_metrics, make_runs, write_run

WIDE, NARROW = (120, 40), (80, 24)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def screen_text(widget) -> str:
    """What ``widget`` draws, line by line."""
    return "\n".join("".join(segment.text for segment in widget.render_line(y)) for y in range(widget.size.height))


def row_of(history: RunHistory, path) -> int:
    """The table row of the run directory ``path`` (the table holds it as the preset's relative runs_dir)."""
    return [row.name for row in history.shown].index(path.name)


async def runs_tab(pilot, focus: bool = False) -> tuple[RunHistory, DataTable]:
    """The Runs tab, reached with the keys a user presses (] three times from Presets); ``focus``: its table
    focused by the test (for the tests of other defects than 1)."""
    await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
    await wait_for(pilot, lambda: pilot.app.query_one(TabbedContent).active == "tab-runs", what="the Runs tab")
    history = pilot.app.query_one(RunHistory)
    table = history.query_one("#runs-table", DataTable)
    if focus:
        table.focus()
        await pilot.pause()
    return history, table


# 1 ------------------------------------------------------------------------------------------------
async def test_1_runs_tab_keys_act_on_the_table_whatever_has_focus(tmp_path):
    runs = make_runs(tmp_path / "runs")
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        notes = capture_notes(app)
        history, table = await runs_tab(pilot)
        await pilot.press("a")                       # attach, not save as (the newest run is dead: says why)
        assert not isinstance(app.screen, SaveAsDialog)
        assert "not running" in notes[-1] and history.shown[0].name in notes[-1]
        app.query_one(TabbedContent).query_one(Tabs).focus()        # the tab bar never takes the keyboard:
        await pilot.pause()
        assert app.focused is table                                   # the tab's keys act at once
        await pilot.press("space")
        assert history.marked == [history.shown[0].path]
        await pilot.press("d")                       # one marked: says why
        assert "two marked runs (1 marked)" in notes[-1]
        history.query_one("#runs-preset").focus()    # a filter has focus: space still marks (enter opens it)
        await pilot.pause()
        await pilot.press("space")
        assert history.marked == [] and not history.query_one("#runs-preset").expanded
        await pilot.press("space")
        assert history.marked == [history.shown[0].path]
        await pilot.press("enter")                   # the filter still opens with enter
        await wait_for(pilot, lambda: history.query_one("#runs-preset").expanded, what="the filter's list")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not history.query_one("#runs-preset").expanded, what="the list closed")
        app.set_focus(None)                          # nothing has focus
        await pilot.pause()
        table.move_cursor(row=row_of(history, runs["fast"]))
        await pilot.press("space", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDiffDialog), what="the comparison")
        await pilot.press("escape")
        commands = {c.title.split(":")[0]: c for c in app.get_system_commands(app.screen)}
        await commands["Save as (a on the Presets tab)"].callback()   # the palette's Save as works from this tab too
        await wait_for(pilot, lambda: isinstance(app.screen, SaveAsDialog), what="the save-as dialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SaveAsDialog), what="the dialog to close")
        await pilot.press("left_square_bracket")    # another tab: the Runs tab's keys say where they act
        await pilot.press("d")
        assert notes[-1] == "d: preset diff and metric deltas of two marked runs on the Runs tab (] switches tabs)"
        await pilot.press("a")                       # a has a meaning on three tabs: all are named
        assert all(f"on the {tab} tab" in notes[-1] for tab in ("Presets", "Runs", "Sweeps"))
        assert not isinstance(app.screen, SaveAsDialog)


# 2 ------------------------------------------------------------------------------------------------
async def test_2_runs_tab_shows_runs_written_while_the_app_is_open(tmp_path, monkeypatch):
    make_runs(tmp_path / "runs")
    clock = [time.time()]
    monkeypatch.setattr(RunHistory, "clock", staticmethod(lambda: clock[0]))
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        history, table = await runs_tab(pilot, focus=True)
        await wait_for(pilot, lambda: table.row_count == 6, what="the table")
        started = time.time() - 30
        new = write_run(tmp_path / "runs", "20990101-000000-cpu-demo-train-dsr", load("cpu-demo"), "train-dsr",
                        metrics=dsr_metrics([25.0]),
                        status={"state": "running", "pid": os.getpid(), "heartbeat": time.time(), "started": started})
        new = Path("runs") / new.name               # as the table holds it (the preset's runs_dir is relative)
        await wait_for(pilot, lambda: str(new) in {key.value for key in table.rows}, timeout=10,
                       what="the run written on disk in the table")
        assert history.row_for(new).state == "running" and history.shown[0].path == new
        status = json.loads((new / "status.json").read_text())
        (new / "status.json").write_text(json.dumps({**status, "state": "finished"}))     # it ends elsewhere
        await wait_for(pilot, lambda: history.row_for(new).state == "finished", timeout=10, what="its new state")
        assert str(table.get_cell(str(new), "state")) == "finished"
        await wait_for(pilot, lambda: not history._reading, what="the last reading")
        refills = history.refills
        assert history.poll() is False and history.refills == refills      # nothing new: no reading, no redraw
        clock[0] = started + 3 * 3600                                     # time passes: ages follow
        await wait_for(pilot, lambda: str(table.get_cell(str(new), "age")) == "3h", timeout=15, what="the new age")
        assert history.refills == refills                                 # only the age cells were redrawn


# 3 ------------------------------------------------------------------------------------------------
async def test_3_compare_two_shows_the_deltas_and_tells_the_runs_apart(tmp_path):
    demo = load("cpu-demo")
    status = {"state": "finished", "heartbeat": time.time()}
    first = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-train-dsr", demo, "train-dsr",
                      metrics=dsr_metrics([23.0, 24.5]), status=status)
    second = write_run(tmp_path / "runs", "20260101-100030-cpu-demo-train-dsr",       # the same minute
                       demo.with_changes({"dsr.learning_rate": 5e-3}), "train-dsr", metrics=dsr_metrics([25.0]),
                       status=status)
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        history, table = await runs_tab(pilot, focus=True)
        for path in (first, second):
            table.move_cursor(row=row_of(history, path))
            await pilot.press("space")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, RunDiffDialog), what="the comparison")
        dialog = app.screen
        await pilot.pause()
        metrics = dialog.query_one("#rundiff-metrics")
        frame = dialog.query_one("#rundiff").content_region
        assert metrics.region.area > 0 and frame.contains_region(metrics.region)    # inside the dialog, on screen
        assert app.screen.region.contains_region(frame)
        text = screen_text(metrics)
        assert "best val PSNR dB" in text and "gain over bicubic dB" in text and "+0.50" in text
        a, b = dialog.labels                                              # the same minute: seconds tell
        assert (a, b) == ("A cpu-demo@0101-100000", "B cpu-demo@0101-100030") and a in text and b in text
        names = screen_text(dialog.query_one("#rundiff-names"))
        assert f"A = {first.name}" in names and f"B = {second.name}" in names


# 4 ------------------------------------------------------------------------------------------------
async def test_4_save_as_takes_the_names_the_cli_takes():
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveAsDialog), what="the save-as dialog")
        dialog = app.screen
        field = dialog.query_one("#saveas-name", Input)
        field.value = "my demo"
        await pilot.press("enter")
        assert "not a valid preset name" in str(dialog.query_one("#saveas-error").render())
        field.value = "cpu-demo+lr2"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.preset.name == "cpu-demo+lr2", what="the preset saved as cpu-demo+lr2")
        assert (user_dir() / "cpu-demo+lr2.toml").is_file()
    assert dialogs.check_name is engine.presets.check_name and not hasattr(dialogs, "NAME_PATTERN")  # one rule


# 5 ------------------------------------------------------------------------------------------------
async def test_5_o_with_nothing_overlaid_says_why(tmp_path):
    runs = make_runs(tmp_path / "runs")
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        notes = capture_notes(app)
        await pilot.press("o")                       # on the Presets tab: where o acts
        assert notes and "Charts tab" in notes[-1]
        pilot.app.query_one(TabbedContent).active = "tab-charts"
        await pilot.pause()
        await pilot.press("o")                       # on the Charts tab: why it cannot act, and how to overlay
        assert "nothing is overlaid" in notes[-1] and "Runs tab" in notes[-1]
        pilot.app.main.show_tab("tab-presets")
        await pilot.pause()
        history, table = await runs_tab(pilot, focus=True)
        table.move_cursor(row=row_of(history, runs["finished"]))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one(TabbedContent).active == "tab-charts", what="the overlay")
        await pilot.press("o")
        assert notes[-1].startswith("cleared 1 overlaid run")


# 6 ------------------------------------------------------------------------------------------------
async def test_6_chart_y_ticks_are_distinct_in_a_narrow_range():
    assert linear_ticks(22.6, 22.64)[1] == ["22.6", "22.61", "22.63", "22.64"]
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        for epoch in range(1, 5):
            app.buffers.add("dsr", "val", epoch, {"psnr": 22.60 + 0.01 * epoch, "bicubic_psnr": 22.62})
        app.query_one(TabbedContent).active = "tab-charts"
        chart = app.query_one("#chart-psnr", MetricChart)
        await wait_for(pilot, lambda: chart.draws > 0 and chart.legend, what="the PSNR chart")
        import re
        plot = re.sub(r"\x1b\[[0-9;]*m", "", chart.plt.build())
        labels = [line.split("┤")[0].strip() for line in plot.splitlines() if "┤" in line]
        assert len(labels) >= 2 and len(set(labels)) == len(labels), labels


# 7 ------------------------------------------------------------------------------------------------
async def test_7_every_column_of_the_runs_table_shows_at_80x24(tmp_path):
    runs = make_runs(tmp_path / "runs")
    app = make_app(remember=False)
    async with app.run_test(size=NARROW) as pilot:
        history, table = await runs_tab(pilot, focus=True)
        await pilot.pause()
        assert table.virtual_size.width <= table.scrollable_content_region.width      # nothing cut at the right
        layout = history.table_layout
        assert {key for key, _ in layout.columns} | set(layout.dropped) == {key for key, _ in COLUMNS}
        table.move_cursor(row=row_of(history, runs["fast"]))
        await pilot.pause()
        detail = history.query_one("#runs-detail")
        assert detail.region.intersection(app.screen.region).area > 0
        text = " ".join(screen_text(detail).split())
        assert runs["fast"].name in text
        assert "differs dsr.learning_rate, dsr.epochs" in text and "ep 4" in text


# 8 ------------------------------------------------------------------------------------------------
async def test_8_an_own_process_job_is_reaped_after_it_ends(tmp_path, monkeypatch):
    started = []

    def start(kind, preset, data, options=None):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
        run_dir = write_run(tmp_path / "runs", f"20260101-100000-{preset.name}-{kind}", preset, kind,
                            status={"state": "running", "pid": proc.pid, "heartbeat": time.time()})
        started.append(DetachedJob(kind, proc, run_dir / OUTPUT_FILE, run_dir))
        return started[-1]

    monkeypatch.setattr(attach_control, "start_detached", start)
    app = make_app(remember=False, detached=True)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("t")
        assert app.jobs.following and app.jobs.detached_jobs == started
        await pilot.press("D")                                   # detach: nothing follows the process now
        await wait_for(pilot, lambda: not app.jobs.following, what="the detach")
        job = started[0]
        await wait_for(pilot, lambda: not app.jobs.detached_jobs, timeout=20, what="the ended process to be reaped")
        assert job.proc.returncode == 0
        try:
            with open(f"/proc/{job.proc.pid}/stat") as handle:
                assert handle.read().split(")")[-1].split()[0] != "Z"          # no zombie left
        except FileNotFoundError:
            pass


def fake_own_process(tmp_path, started: list, layout):
    """A ``start_detached`` whose process sleeps while ``layout(run_dir, pid)`` writes what the job would."""
    def start(kind, preset, data, options=None):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        run_dir = write_run(tmp_path / "runs", f"20260101-100000-{preset.name}-{kind}", preset, kind)
        layout(run_dir, proc.pid, preset)
        started.append(DetachedJob(kind, proc, run_dir / OUTPUT_FILE, run_dir))
        return started[-1]
    return start


def running(pid: int) -> dict:
    return {"state": "running", "pid": pid, "heartbeat": time.time()}


async def test_9_the_pretraining_before_an_own_process_job_shows_in_the_job_panel(tmp_path, monkeypatch):
    """Issue 26, defect 3: a first t without recogniser weights pre-trains first; the job panel, charts and
    log follow the pre-training run the job's status names instead of sitting at 0%."""
    def layout(run_dir, pid, preset):
        pretrain = write_run(tmp_path / "runs", f"20260101-100001-{preset.name}-pretrain", preset, "pretrain",
                             metrics=[{"stage": "pretrain", "epoch": 1, "step": 3, "split": "val", "top1": 0.4}],
                             status=running(pid))
        RunDir(pretrain).log_progress(Progress("pretrain", "pretrain", 2, 40, 3, 5, 80.0, 400.0, 2.5), global_step=8)
        (run_dir / "status.json").write_text(json.dumps({**running(pid), "host": socket.gethostname(),
                                                         "job": "train-dsr", "stage": "pretrain",
                                                         "stage_run": str(pretrain)}))
    started: list = []
    monkeypatch.setattr(attach_control, "start_detached", fake_own_process(tmp_path, started, layout))
    app = make_app(remember=False, detached=True)
    try:
        async with app.run_test(size=WIDE) as pilot:
            await pilot.press("t")
            panel = app.query_one(JobPanel)
            await wait_for(pilot, lambda: panel.last is not None, timeout=10, what="the pre-training's progress")
            assert (panel.last.stage, panel.last.epoch, panel.last.epochs) == ("pretrain", 2, 40)
            assert app.buffers.series("pretrain", "val", "top1")
    finally:
        for job in started:
            job.proc.kill()
            job.proc.wait()


async def test_10_a_followed_pipeline_shows_its_stage_n_of_n_and_overall_eta(tmp_path, monkeypatch):
    """Issue 26, defect 5: during p the job panel says which stage of how many and the whole pipeline's ETA."""
    def layout(run_dir, pid, preset):
        stage = write_run(tmp_path / "runs", f"20260101-100001-{preset.name}-train-dsr", preset, "train-dsr",
                          status=running(pid))
        RunDir(stage).log_progress(Progress("train-dsr", "dsr", 1, 4, 3, 5, 80.0, 60.0, 0.5), global_step=3)
        (run_dir / "summary.json").write_text(json.dumps({"stage_runs": {"train-dsr": str(stage)}}))
        (run_dir / "status.json").write_text(json.dumps({**running(pid), "host": socket.gethostname(),
                                                         "job": "pipeline", "stage": "train-dsr", "part": 2,
                                                         "parts": 4, "overall_eta_seconds": 3725.0}))
    started: list = []
    monkeypatch.setattr(attach_control, "start_detached", fake_own_process(tmp_path, started, layout))
    app = make_app(remember=False, detached=True)
    try:
        async with app.run_test(size=WIDE) as pilot:
            await pilot.press("p")
            panel = app.query_one(JobPanel)
            await wait_for(pilot, lambda: panel.last is not None, timeout=10, what="the stage's progress")
            text = screen_text(panel.query_one("#job-detail"))
            assert "stage 2/4 · dsr · epoch 1/4" in text and "all ≈1:02:05" in text
            assert "stage 2/4" in panel.status_line()
    finally:
        for job in started:
            job.proc.kill()
            job.proc.wait()
