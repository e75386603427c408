"""Pilot tests of the job flows with fake engine jobs: progress and charts, stop, quit, evaluate,
errors, tips, run history."""

from __future__ import annotations

import json
import re

import pytest
from textual.widgets import DataTable, RichLog, Static, TabbedContent

import workbench.app.job_handle as job_handle
from workbench.app.widgets.charts import ChartsPanel, MetricChart
from workbench.app.widgets.dialogs import TipDiffDialog
from workbench.app.widgets.eval_table import EvalTable
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.tips_panel import TipsPanel

from app_fake_jobs import write_eval_run
from app_helpers import make_app, use_fake_job, wait_for


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def plain(chart: MetricChart) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", chart.plt.build())


async def log_text(pilot) -> str:
    """The log panel's text (RichLog renders only once visible: show its tab, then go back)."""
    tabs = pilot.app.query_one(TabbedContent)
    before, tabs.active = tabs.active, "tab-log"
    log = pilot.app.query_one("#log", RichLog)
    await wait_for(pilot, lambda: log.size.width > 0, what="the log laid out")
    await pilot.pause()                                    # its deferred lines are written once it has a size
    text = "\n".join(line.text for line in pilot.app.query_one("#log", RichLog).lines)
    tabs.active = before
    await pilot.pause()
    return text


async def test_train_job_updates_progress_charts_log_and_tips(monkeypatch, tmp_path):
    use_fake_job(monkeypatch, "train-dsr", "quick_train")
    app = make_app(remember=False)
    messages = []
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await pilot.press("t")
        assert app.query_one(TabbedContent).active == "tab-charts"
        await wait_for(pilot, lambda: not app.jobs.running, what="the job to end")
        panel = app.query_one(JobPanel)
        assert panel.state == "finished"
        assert panel.last is not None and panel.last.step == 4 and panel.last.epoch == 3
        assert "ETA 0:00:00" in str(app.query_one("#job-detail", Static).render()) or panel.last.eta_seconds == 0
        names = {type(m).__name__ for m in messages}
        assert {"JobProgress", "JobMetrics", "JobLog", "JobFinished"} <= names
        assert [y for _, y in app.buffers.series("dsr", "val", "psnr")] == [21.0, 22.0, 23.0]
        assert len(app.buffers.series("dsr", "train", "loss")) == 2  # the NaN epoch is not plotted
        charts = app.query_one(ChartsPanel)
        await wait_for(pilot, lambda: app.query_one("#chart-psnr", MetricChart).draws > 0, what="a redraw")
        draws = {c.id: c.draws for c in charts.query(MetricChart)}
        await pilot.pause(0.8)  # no new data: the timer skips every chart
        assert {c.id: c.draws for c in charts.query(MetricChart)} == draws
        assert "bicubic 21.00" in app.query_one("#chart-psnr", MetricChart).title_text
        await pilot.press("l")
        await wait_for(pilot, lambda: app.query_one("#chart-dsr-val", MetricChart).draws > draws["chart-dsr-val"],
                       what="a log-y redraw")
        assert app.query_one("#chart-dsr-val", MetricChart).title_text.endswith("· log")
        assert "fake training started" in (await log_text(pilot)) and "finished" in (await log_text(pilot))
        # hidden charts do not redraw
        app.query_one(TabbedContent).active = "tab-log"
        await pilot.pause()
        hidden = app.query_one("#chart-dsr-train", MetricChart).draws
        await pilot.press("s")
        await pilot.pause(0.8)
        assert app.query_one("#chart-dsr-train", MetricChart).draws == hidden
        # the NaN train loss makes the instability tip: y shows the diff, y applies it unsaved
        assert app.query_one(TipsPanel).tips and app.query_one(TipsPanel).tips[0].rule == "instability"
        app.query_one(TabbedContent).active = "tab-tips"
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, TipDiffDialog)
        assert ("dsr.learning_rate", app.preset.dsr.learning_rate, 1e-4) in app.screen.changes
        await pilot.press("y")
        await pilot.pause()
        assert app.preset.dsr.learning_rate == pytest.approx(1e-4) and app.dirty


async def test_a_burst_of_progress_is_shown_once_and_a_quiet_job_wakes_nothing(monkeypatch):
    use_fake_job(monkeypatch, "train-dsr", "burst_then_quiet")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one(JobPanel)
        shown = []
        original = panel.update_progress
        panel.update_progress = lambda event: (shown.append(event.step), original(event))
        await pilot.press("t")
        await wait_for(pilot, lambda: shown and shown[-1] == 200, what="the last progress shown")
        assert len(shown) <= 3                              # 200 events, drawn at most a few times
        assert len(app.buffers.series("dsr", "live", "loss")) == 200   # every point still reaches the chart
        charts = app.query_one(ChartsPanel)
        await wait_for(pilot, lambda: app.query_one("#chart-dsr-train", MetricChart).draws > 0, what="a draw")
        draws = {c.id: c.draws for c in charts.query(MetricChart)}
        app.buffers.add("dsr", "live", 1.5, {"loss": 0.001})          # more live loss: only its chart redraws
        charts.changed()                                              # (the app says so with each event)
        await wait_for(pilot, lambda: app.query_one("#chart-dsr-train", MetricChart).draws > draws["chart-dsr-train"],
                       what="the live-loss chart redrawn")
        assert {c.id: c.draws for c in charts.query(MetricChart) if c.id != "chart-dsr-train"} == \
            {k: v for k, v in draws.items() if k != "chart-dsr-train"}
        before = len(shown)
        await pilot.pause(1.0)                              # nothing new: no timer shows anything
        assert len(shown) == before and panel._progress_timer is None
        app.jobs.request_stop()
        await wait_for(pilot, lambda: not app.jobs.running, what="the stop")


async def test_stop_with_confirmation_leaves_a_resumable_checkpoint_and_allows_a_new_job(monkeypatch):
    use_fake_job(monkeypatch, "train-dsr", "until_stopped")
    app = make_app(remember=False)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.check_action("stop", ()) is None
        await pilot.press("t")
        await wait_for(pilot, lambda: app.query_one(JobPanel).last is not None, what="progress")
        assert app.check_action("train", ()) is None and app.check_action("evaluate", ()) is None
        assert "x stops it" in str(app.query_one("#statusline", Static).render())
        await pilot.press("x")
        await pilot.press("n")  # cancelled: still running
        await pilot.pause(0.2)
        assert app.jobs.running
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: not app.jobs.running, what="the job to stop")
        assert app.query_one(JobPanel).state == "stopped"
        assert "resumable checkpoint" in (await log_text(pilot)) and "last.pt" in (await log_text(pilot))
        runs = app.query_one(RunHistory).query_one(DataTable)
        assert runs.row_count == 1 and "last.pt" in str(runs.get_cell_at((0, runs.get_column_index("ckpt"))))
        assert app.check_action("train", ()) is True


async def test_quit_while_running_confirms_stops_cleanly_and_exits(monkeypatch, tmp_path):
    use_fake_job(monkeypatch, "train-dsr", "until_stopped")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: app.query_one(JobPanel).last is not None, what="progress")
        await pilot.press("q")
        await pilot.pause()
        assert app.is_running and app.jobs.running
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to quit")
    assert app.return_code == 0
    assert list((tmp_path / "runs").glob("*/last.pt"))


async def test_evaluate_with_one_key_shows_the_table_with_bicubic_baseline(monkeypatch):
    use_fake_job(monkeypatch, "evaluate", "evaluate")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("e")
        await wait_for(pilot, lambda: not app.jobs.running, what="evaluation")
        assert app.query_one(TabbedContent).active == "tab-results"
        table = app.query_one(EvalTable)
        assert table.cell("rank1", "bicubic") == "50.0%"
        assert table.cell("rank1", "dsr") == "-"  # no DSR checkpoint yet: the bicubic baseline
        assert table.cell("psnr", "hr") == "-" and table.cell("psnr", "bicubic") == "22.25 dB"
        assert "bicubic baseline" in str(app.query_one("#eval-source", Static).render())
        assert "bicubic baseline" in (await log_text(pilot))


async def test_pipeline_shows_the_results_of_its_evaluate_stage(monkeypatch):
    use_fake_job(monkeypatch, "pipeline", "pipeline")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("p")
        await wait_for(pilot, lambda: not app.jobs.running, what="the pipeline")
        assert app.query_one(TabbedContent).active == "tab-results"
        assert app.query_one(EvalTable).cell("rank1", "dsr") == "62.5%"
        assert app.buffers.series("stage2", "val", "top1") == [(1.0, 0.5)]


async def test_opening_a_past_run_shows_its_table_and_overlays_its_curves(tmp_path):
    from engine.presets import load

    path = write_eval_run(tmp_path / "runs", load("cpu-demo"))
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.query_one(TabbedContent).active = "tab-runs"
        runs = app.query_one(RunHistory).query_one(DataTable)
        await pilot.pause()
        assert runs.row_count == 1
        runs.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.query_one(TabbedContent).active == "tab-results", what="results")
        assert app.query_one(EvalTable).cell("rank1", "dsr") == "62.5%"
        [(label, overlay)] = app.query_one(ChartsPanel).overlays
        assert overlay.series("dsr", "val", "psnr") == [(1.0, 23.0)]
        app.query_one(TabbedContent).active = "tab-charts"
        await wait_for(pilot, lambda: (label, "gray") in app.query_one("#chart-psnr", MetricChart).legend,
                       what="the overlay drawn and named in the legend")
    assert json.loads((path / "eval.json").read_text())["dsr"]["rank1"] == 0.625


async def test_a_failing_job_is_shown_and_the_app_keeps_running(monkeypatch):
    use_fake_job(monkeypatch, "train-dsr", "failing")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: not app.jobs.running, what="the failure")
        assert app.query_one(JobPanel).state == "failed"
        assert "boom: the fake job failed" in (await log_text(pilot))
        assert "Traceback" in (await log_text(pilot))
        assert app.is_running and app.check_action("train", ()) is True
        await pilot.press("3")  # still responsive (preset 3: cpu-real)
        await wait_for(pilot, lambda: app.preset.name != "cpu-demo", what="a preset switch")


async def test_an_error_escaping_the_worker_is_shown_once(monkeypatch):
    def broken_run_job(request, emit, stop):
        raise OSError("disk vanished")

    monkeypatch.setattr(job_handle, "run_job", broken_run_job)
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: not app.jobs.running, what="the worker error")
        assert app.query_one(JobPanel).state == "failed"
        assert (await log_text(pilot)).count("disk vanished") == 1
        assert app.is_running


async def test_leaving_the_app_any_other_way_stops_the_job_with_a_checkpoint(monkeypatch, tmp_path):
    use_fake_job(monkeypatch, "train-dsr", "until_stopped")
    app = make_app(remember=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: app.query_one(JobPanel).last is not None, what="progress")
    # run_test's exit is like ctrl+q or a closed browser tab: no dialog, yet the job saved last.pt
    assert list((tmp_path / "runs").glob("*/last.pt"))


async def test_a_jobs_last_news_after_the_app_closed_is_dropped_not_raised():
    """A job's messages can still arrive while the app closes (the case of the test above, once in a while):
    every handler of a job's news then leaves the gone screen alone instead of raising NoMatches."""
    from engine.events import Log, Metrics, Progress
    from workbench.app import messages as msg

    app = make_app(remember=False)
    async with app.run_test(size=(80, 24)):
        assert app.main_widget_ready()
    assert not app.main_widget_ready()
    news = [msg.JobProgress(Progress("train-dsr", "dsr", 1, 3, 5, 20, 100.0, 10.0, 0.1)),
            msg.JobMetrics(Metrics("train-dsr", "dsr", 1, 5, "val", {"psnr": 25.0})),
            msg.JobLog(Log("train-dsr", "late line"))]
    for message in news:                  # the controller posts to the gone screen: dropped, nothing raised
        app.jobs.post(message)
    assert app.jobs.news is not None and not app.jobs.news.is_attached


def count_layout_requests(widgets) -> list[str]:
    """The ids of ``widgets`` each time one asks for a layout pass of the screen (refresh(layout=True))."""
    requests: list[str] = []
    for widget in widgets:
        def spy(*args, _widget=widget, _refresh=widget.refresh, **kwargs):
            if kwargs.get("layout"):
                requests.append(_widget.id or "legend")
            return _refresh(*args, **kwargs)
        widget.refresh = spy
    return requests


async def test_progress_and_redraws_beside_a_job_need_no_layout_pass_yet_every_line_still_fits():
    """A layout pass of the whole screen was most of what the app cost a job it followed: progress lines,
    status line and unchanged chart legends now redraw in place, and only a change of height lays out."""
    from engine.events import Progress

    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one(JobPanel)
        detail, status = app.query_one("#job-detail", Static), app.query_one("#statusline", Static)
        panel.set_state("running", "train-dsr", "starting…")
        await pilot.pause()
        assert detail.size.height == 1
        width = detail.content_size.width

        def progress(step: int, stage: str = "dsr") -> Progress:
            return Progress("train-dsr", stage, 2, 30, step, 20, 120.0 + step, 60.0 - step, 0.1 / step)

        panel.update_progress(progress(1))          # 1 line -> wrapped lines: this one lays out
        app.main.update_status()
        await pilot.pause()
        fitted = detail.size.height
        assert fitted == detail.visual.get_height(detail.styles, width) >= 2
        layouts = count_layout_requests([detail, status])
        for step in range(2, 12):
            panel.update_progress(progress(step))
            app.main.update_status()
            await pilot.pause()
        assert layouts == []
        assert "step 11/20" in str(detail.render()) and "131.0 img/s" in str(status.render())
        assert detail.size.height == fitted
        panel.update_progress(progress(12, stage="a stage name long enough to need one more line " * 2))
        await pilot.pause()
        assert set(layouts) == {"job-detail"}       # taller text: laid out again, and it all shows
        assert detail.size.height == detail.visual.get_height(detail.styles, width) > fitted

        app.query_one(TabbedContent).active = "tab-charts"
        app.buffers.add("dsr", "val", 1, {"psnr": 20.0, "bicubic_psnr": 19.0})
        app.query_one(ChartsPanel).changed()        # what the app does with each event
        chart = app.query_one("#chart-psnr", MetricChart)
        await wait_for(pilot, lambda: chart.draws > 0, what="the PSNR chart drawn")
        legend = chart.parent.query_one(".chart-legend", Static)
        legend_layouts = count_layout_requests([legend])
        app.buffers.add("dsr", "val", 2, {"psnr": 21.0, "bicubic_psnr": 19.0})
        app.query_one(ChartsPanel).changed()
        await wait_for(pilot, lambda: chart.draws > 1, what="the PSNR chart redrawn")
        assert legend_layouts == []                 # same lines, same legend: not redrawn
        assert "bicubic" in str(legend.render()) and "DSR" in str(legend.render())


async def test_progress_that_grows_while_the_sidebar_is_hidden_shows_whole_when_it_is_shown_again():
    from engine.events import Progress

    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        panel, detail = app.query_one(JobPanel), app.query_one("#job-detail", Static)
        panel.set_state("running", "train-dsr", "starting…")
        await pilot.pause()
        assert detail.size.height == 1
        await pilot.resize_terminal(90, 40)         # narrow: the sidebar is hidden, the status line shows the job
        await pilot.pause()
        panel.update_progress(Progress("train-dsr", "dsr", 2, 30, 5, 20, 125.0, 50.0, 0.05))
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        await pilot.pause()
        width = detail.content_size.width
        assert width > 0 and detail.size.height == detail.visual.get_height(detail.styles, width) >= 2
