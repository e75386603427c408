"""Pilot tests of the runs table: states, sorting, filters, overlaying marked runs, the two-run diff,
CSV export, the latest evaluation after a restart; snapshots at 120x40 and 80x24."""

from __future__ import annotations

import csv
import io
import time

import pytest
from rich.console import Console
from textual.widgets import DataTable, Select, TabbedContent

from engine.presets import list_presets
from workbench.app.widgets.charts import MetricChart
from workbench.app.widgets.dialogs import RunDiffDialog
from workbench.app.widgets.eval_table import EvalTable
from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.vram_gauge import VramGauge

from app_helpers import make_app, wait_for
from run_factory import make_runs

WIDE, NARROW = (120, 40), (80, 24)


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_runs(tmp_path / "runs")


def column(table: DataTable, key: str) -> list[str]:
    index = table.get_column_index(key)
    return [str(table.get_cell_at((row, index))) for row in range(table.row_count)]


async def open_runs(pilot) -> tuple[RunHistory, DataTable]:
    pilot.app.query_one(TabbedContent).active = "tab-runs"
    history = pilot.app.query_one(RunHistory)
    table = history.query_one("#runs-table", DataTable)
    table.focus()
    await pilot.pause()
    return history, table


async def mark(pilot, table: DataTable, history: RunHistory, *paths) -> None:
    for path in paths:
        table.move_cursor(row=[row.name for row in history.shown].index(path.name))
        await pilot.press("space")


async def test_the_table_shows_state_results_and_sorts_and_filters(runs):
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        history, table = await open_runs(pilot)
        assert table.row_count == 6
        states = dict(zip(column(table, "run"), column(table, "state")))
        assert states["0101-1400"] == "dead" and states["0101-1000"] == "finished"   # killed mid-way: not finished
        assert set(column(table, "state")) == {"dead", "failed", "stopped", "finished"}
        assert column(table, "run")[0] == "0101-1400"             # newest first
        # sort by PSNR with a header click: best first, runs without PSNR last
        before = list(table.columns.values())[:table.get_column_index("psnr")]
        await pilot.click("#runs-table", offset=(2 + sum(c.get_render_width(table) for c in before), 0))
        await pilot.pause()
        assert history.sort_key == "psnr"
        assert column(table, "psnr")[:3] == ["26.00", "24.50", "21.00"] and column(table, "psnr")[-1] == "-"
        await pilot.press("S")                                      # next sort key: gain
        assert history.sort_key == "gain" and column(table, "gain")[0] == "+4.00"
        # the fast-demo run differs from the selected preset (cpu-demo) in two keys: at this width the
        # column is in the line under the table, for the highlighted run
        table.move_cursor(row=column(table, "preset").index("fast-demo"))
        await pilot.pause()
        assert "differs" in history.table_layout.dropped
        assert "differs dsr.learning_rate, dsr.epochs" in str(history.query_one("#runs-detail").render())
        # filters
        history.query_one("#runs-preset", Select).value = "fast-demo"
        await pilot.pause()
        assert column(table, "preset") == ["fast-demo"]
        history.query_one("#runs-preset", Select).clear()
        history.query_one("#runs-job", Select).value = "finetune"
        await pilot.pause()
        assert column(table, "job") == ["tune"] and column(table, "state") == ["stopped"]      # abbreviated


async def test_three_marked_runs_draw_three_named_curves(runs):
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        history, table = await open_runs(pilot)
        await mark(pilot, table, history, runs["finished"], runs["fast"], runs["dead"])
        assert len(history.marked) == 3
        await pilot.press("c")
        await wait_for(pilot, lambda: app.query_one(TabbedContent).active == "tab-charts", what="the charts")
        chart = app.query_one("#chart-psnr", MetricChart)
        await wait_for(pilot, lambda: len(chart.legend) >= 3, what="three overlaid curves")
        labels = [label for label, _ in chart.legend]
        assert labels[:3] == ["cpu-demo@0101-1000", "fast-demo@0101-1100", "cpu-demo@0101-1400"]
        assert len({color for _, color in chart.legend[:3]}) == 3          # one colour per run
        legend = str(chart.parent.query_one(".chart-legend").render())
        assert all(label in legend for label in labels[:3])
        await pilot.press("o")                                              # clears the overlays
        await wait_for(pilot, lambda: not chart.legend or all("@" not in l for l, _ in chart.legend),
                       what="the overlays cleared")


async def test_two_marked_runs_show_the_preset_diff_and_metric_deltas(runs):
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        history, table = await open_runs(pilot)
        await mark(pilot, table, history, runs["finished"])
        notes = []
        app.notify = lambda message, **kw: notes.append(message)
        await pilot.press("d")                                  # one marked: says why
        assert notes and "two marked runs (1 marked)" in notes[-1]
        await mark(pilot, table, history, runs["fast"])
        await pilot.press("d")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, RunDiffDialog)
        assert [key for key, _, _ in dialog.changes] == ["dsr.learning_rate", "dsr.epochs"]
        deltas = {d.metric: d.change for d in dialog.deltas}
        assert deltas["best val PSNR dB"] == pytest.approx(1.5) and deltas["gain over bicubic dB"] == pytest.approx(1.5)
        console = Console(width=120, record=True, file=io.StringIO())
        console.print(*dialog.tables)
        text = console.export_text()
        assert "dsr.learning_rate" in text and "0.005" in text
        assert "+1.50" in text and "cpu-demo@0101-1000" in text and "fast-demo@0101-1100" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, RunDiffDialog)


async def test_csv_of_marked_runs(runs, tmp_path):
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        history, table = await open_runs(pilot)
        await mark(pilot, table, history, runs["finished"], runs["stopped"])
        await pilot.press("w")
        await pilot.pause()
    [written] = list((tmp_path / "runs").glob("metrics-*.csv"))
    rows = list(csv.DictReader(written.open()))
    assert {r["run"] for r in rows} == {runs["finished"].name, runs["stopped"].name} and len(rows) == 8


async def test_results_tab_shows_the_latest_evaluation_after_a_restart(runs):
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        table = app.query_one(EvalTable)
        assert table.cell("rank1", "dsr") == "62.5%" and table.cell("rank1", "hr") == "95.0%"
        assert runs["evaluate"].name in str(table.query_one("#eval-source").render())
        await pilot.press(str([e.name for e in list_presets()].index("vlr-32x32") + 1))   # no evaluation of it
        await wait_for(pilot, lambda: app.preset.name == "vlr-32x32", what="the preset switch")
        assert "no evaluation of vlr-32x32 yet" in str(table.query_one("#eval-source").render())


async def settle(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.query_one(VramGauge).reading is not None, what="the VRAM reading")
    await pilot.pause(0.5)


async def fixed_runs_tab(pilot) -> None:
    await settle(pilot)
    RunHistory.clock = staticmethod(lambda: time.mktime(time.strptime("20260101-160000", "%Y%m%d-%H%M%S")))
    history, table = await open_runs(pilot)
    for path in [row.path for row in history.rows]:      # statuses were written "now": give every run its stamp
        row = history.row_for(path)
        row.started = time.mktime(time.strptime(row.name[:15], "%Y%m%d-%H%M%S"))
    history.refill()
    await mark(pilot, table, history, history.shown[1].path, history.shown[3].path)
    await pilot.pause(0.3)
    pilot.app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["120x40", "80x24"])
def test_runs_table_snapshot(snap_compare, size, monkeypatch):
    monkeypatch.setattr(RunHistory, "clock", RunHistory.clock)
    assert snap_compare(make_app(remember=False), terminal_size=size, run_before=fixed_runs_tab)
