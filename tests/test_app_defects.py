"""Regression tests of the defects of issue 17 (numbered as there; 5 is the trainer's, tested there)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from engine.errors import WorkbenchError
from engine.jobs import registry
from engine.events import Metrics, Progress
from engine.presets import load
from engine.runs.run_dir import RunDir
from engine.tips import propose_tips, target_set_name
from workbench.app.main_screen import error_detail
from workbench.app.job_plans import plan_job
from workbench.app.widgets.charts import MetricChart, fit_title, linear_ticks
from workbench.app.widgets.dialogs import ConfirmDialog, HelpDialog
from workbench.app.widgets.job_panel import JobPanel, progress_text
from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.tips_panel import TipsPanel

from app_helpers import capture_notes, make_app, use_fake_job, wait_for
from run_factory import write_run


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def diverging(request, emit, stop):
    """A DSR job whose second epoch is NaN, then fails as the trainer does."""
    run = RunDir.create(request.preset.runtime.runs_dir, request.preset, request.kind)
    for epoch, loss in ((1, 1.0), (2, math.nan)):
        for split in ("train", "val"):
            event = Metrics(request.kind, "dsr", epoch, epoch, split, {"loss": loss, "psnr": 20.0, "bicubic_psnr": 21.0})
            run.log_metrics(event)
            emit(event)
    raise WorkbenchError("DSR training diverged at epoch 2 (val loss nan). Lower dsr.learning_rate.")


# 1 ------------------------------------------------------------------------------------------------
async def test_1_quit_with_unsaved_edits_asks():
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.preset = app.preset.with_changes({"dsr.epochs": 7})
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "Unsaved changes to cpu-demo" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and app.preset.dsr.epochs == 7
        await pilot.press("q", "y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to quit")


# 2 ------------------------------------------------------------------------------------------------
def rendered_row(table: DataTable, key: str) -> str:
    table.scroll_to(y=max(0, table.get_row_index(key) - 2), animate=False)
    table.refresh()
    y = table.get_row_index(key) - int(table.scroll_y) + 1      # +1: the header line
    return "".join(segment.text for segment in table.render_line(y))


async def test_2_reference_column_shows_whole_values_and_survives_a_long_path():
    app = make_app("cpu-demo", remember=False)          # derives from vlr-32x32: its values are the reference
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#fields", DataTable)
        await wait_for(pilot, lambda: rendered_row(table, "dsr.learning_rate").split()[-1] == "1.3e-4",
                       what="the reference column")
        assert rendered_row(table, "dsr.ema_decay").split()[-1] == "0.999"
        table.focus()
        table.move_cursor(row=table.get_row_index("runtime.edgeface_weights"))
        await pilot.press("enter")
        app.query_one("#field-input", Input).value = "/a/very/long/path/to/some/weights/" * 4 + "w.pt"
        await wait_for(pilot, lambda: "…" in rendered_row(table, "runtime.edgeface_weights"), what="the cut path")
        assert table.virtual_size.width <= table.size.width           # nothing pushed out of view
        assert rendered_row(table, "dsr.learning_rate").split()[-1] == "1.3e-4"
        assert "…" in rendered_row(table, "runtime.edgeface_weights")


# 3 ------------------------------------------------------------------------------------------------
async def test_3_tips_of_a_failed_job_and_of_an_opened_run(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.JOBS, "train-dsr", dataclasses.replace(registry.JOBS["train-dsr"], function="test_app_defects:diverging"))
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: not app.jobs.running, what="the failure")
        assert app.query_one(JobPanel).state == "failed"
        assert [tip.rule for tip in app.query_one(TipsPanel).tips][:1] == ["instability"]
        # an old run opened in the Runs tab gives its own tips (PSNR far under bicubic)
        path = write_run(tmp_path / "runs", "20250101-000000-cpu-demo-train-dsr", load("cpu-demo"), "train-dsr",
                         metrics=[{"stage": "dsr", "epoch": 1, "split": "val", "loss": 0.9, "psnr": 4.7,
                                   "bicubic_psnr": 22.6}])
        app.query_one(RunHistory).reload("runs")
        app.query_one(TabbedContent).active = "tab-runs"
        history = app.query_one(RunHistory)
        table = history.query_one(DataTable)
        table.focus()
        table.move_cursor(row=[r.name for r in history.shown].index(path.name))
        await pilot.press("enter")
        await pilot.pause()
        tips = app.query_one(TipsPanel)
        assert tips.source.startswith(f"run {path.name}") and tips.tips[0].rule == "dsr_below_bicubic"


# 4 ------------------------------------------------------------------------------------------------
def test_4_evaluate_prefers_a_finished_finetune_run_and_names_it(tmp_path):
    preset = load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs")})
    finished = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-finetune", preset, "finetune",
                         status={"state": "finished", "heartbeat": 0})
    stopped = write_run(tmp_path / "runs", "20260101-110000-cpu-demo-finetune", preset, "finetune",
                        status={"state": "stopped", "heartbeat": 0})
    for run in (finished, stopped):
        (run / "best.pt").write_bytes(b"x")
    plan = plan_job("evaluate", preset)
    assert plan.options["edgeface"] == str(finished / "best.pt")
    assert f"run {finished.name}, finished" in plan.note
    (finished / "best.pt").unlink()                  # only the stopped run is left: used, and said so
    plan = plan_job("evaluate", preset)
    assert plan.options["edgeface"] == str(stopped / "best.pt") and f"{stopped.name}, stopped" in plan.note


# 6 ------------------------------------------------------------------------------------------------
def test_6_titles_fit_and_tick_labels_are_short():
    assert fit_title("DSR losses · train · smooth 0.9 · log", 20) == "DSR losses · trai…"
    assert len(fit_title("x" * 80, 30)) == 28
    ticks, labels = linear_ticks(0.1234567890123456789, 0.3)
    assert labels[0] == "0.123" and max(map(len, labels)) <= 5 and len(ticks) == 4


async def test_6_chart_legends_name_every_line_outside_the_plot(monkeypatch):
    use_fake_job(monkeypatch, "train-dsr", "quick_train")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: not app.jobs.running, what="the job")
        chart = app.query_one("#chart-dsr-train", MetricChart)
        await wait_for(pilot, lambda: chart.draws > 0 and chart.legend, what="a draw")
        labels = [label for label, _ in chart.legend]
        assert labels == ["loss (steps)", "loss", "l1", "tv"]
        legend = str(chart.parent.query_one(".chart-legend").render())
        assert all(label in legend for label in labels)
        plot = chart.plt.build()
        assert " l1 " not in plot and "tv" not in plot         # the legend is not drawn over the data
        import re
        labels_left = [line.split("┤")[0] for line in re.sub(r"\x1b\[[0-9;]*m", "", plot).splitlines() if "┤" in line]
        assert labels_left and max(len(label.strip()) for label in labels_left) <= 8   # 3 significant digits


# 7 ------------------------------------------------------------------------------------------------
async def test_7_keys_that_cannot_act_say_why():
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        notes = capture_notes(app)
        await pilot.press("ctrl+s")
        assert notes[-1] == "built-in presets are read-only: a saves a copy"
        await pilot.press("x")
        assert notes[-1] == "no job is running"
        await pilot.press("y")                        # a key of another tab says where it acts
        assert notes[-1].startswith("y: the highlighted tip's diff") and "on the Tips tab" in notes[-1]
        assert app.check_action("stop", ()) is None                       # still shown dimmed in the footer
        app.query_one(TabbedContent).active = "tab-tips"
        await pilot.pause()
        await pilot.press("y")                        # there, it says why it cannot act
        assert notes[-1].startswith("no tip to apply")


# 8 ------------------------------------------------------------------------------------------------
async def test_8_square_brackets_are_not_markup():
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpDialog)
        notes = [w for w in app.screen.query(Static) if "switch tabs" in str(w.render())]
        assert notes and "[ and ] switch tabs" in str(notes[0].render())
        await pilot.press("escape")
        app.notify("press [ or ] to switch tabs")
        await pilot.pause()
        toast = [n for n in app._notifications]
        assert toast[-1].message == "press [ or ] to switch tabs" and toast[-1].markup is False


# 9 ------------------------------------------------------------------------------------------------
def test_9_error_detail_keeps_whole_words():
    error = "DSR training diverged at epoch 12 (val loss nan). " + "Lower the learning rate and retry. " * 30
    detail = error_detail(error)
    assert detail.endswith("… (full text in the Log tab)") and detail[: -len(" … (full text in the Log tab)")] \
        .endswith("retry.") or detail.rsplit(" … ", 1)[0].split()[-1] in error.split()
    short = "boom: it failed in the middle of a sentence that is not cut"
    assert error_detail(short) == short


async def test_9_stop_toast_names_the_checkpoint(monkeypatch):
    use_fake_job(monkeypatch, "train-dsr", "until_stopped")
    app = make_app(remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        notes = capture_notes(app)
        await pilot.press("t")
        await wait_for(pilot, lambda: app.query_one(JobPanel).last is not None, what="progress")
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: not app.jobs.running, what="the stop")
        assert any(note.startswith("train-dsr stopped: resumable checkpoint") and note.endswith("last.pt")
                   for note in notes)


# 10 -----------------------------------------------------------------------------------------------
def dsr_history(psnrs, bicubic):
    return [{"stage": "dsr", "epoch": e, "split": "val", "loss": 0.5, "psnr": p, "bicubic_psnr": bicubic}
            for e, p in enumerate(psnrs, 1)]


def test_10_psnr_equal_to_bicubic_gives_a_tip():
    preset = load("vlr-14x16")
    tips = propose_tips(dsr_history([22.1, 22.5, 22.63], 22.64), preset)
    assert tips and tips[0].rule == "dsr_no_gain" and "-0.01 dB" in tips[0].observed
    assert tips[0].patch["dsr.epochs"] == 2 * preset.dsr.epochs


def test_10_a_wrecked_dsr_gets_lower_the_learning_rate_not_more_channels():
    preset = load("cpu-demo").with_changes({"dsr.learning_rate": 0.05})
    evaluation = {"dsr": {"rank1": 0.05}, "bicubic": {"rank1": 0.3}}
    tips = propose_tips(dsr_history([4.7], 22.6), preset, evaluation=evaluation)
    assert [tip.rule for tip in tips] == ["dsr_below_bicubic"]
    assert tips[0].patch["dsr.learning_rate"] == pytest.approx(1e-4) and "lower the learning rate" in tips[0].title
    assert "dsr.base_channels" not in tips[0].patch


# 11 -----------------------------------------------------------------------------------------------
def test_11_polish():
    assert target_set_name(16, 16) == "16x16" and target_set_name(14, 16) == "14x16"
    eval_pass = Progress("evaluate", "eval", 1, 3, 2, 5)
    assert "pass 1/3" in progress_text(eval_pass) and "epoch" not in progress_text(eval_pass)
    done = Progress("train-dsr", "dsr", 3, 3, 4, 4, eta_seconds=12.0)
    assert "ETA" not in progress_text(done) and "done" in progress_text(done)
    assert "ETA 0:00:12" in progress_text(Progress("train-dsr", "dsr", 2, 3, 4, 4, eta_seconds=12.0))
    from workbench.app import app as app_module
    assert "vlr-workbench serve" in app_module.HELP_NOTES and "textual serve" not in app_module.HELP_NOTES
