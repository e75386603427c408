"""Issue 37: each tab owns its keys, the app what is app-wide; and the app defects found by a new-user test."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, RichLog, Select, TabbedContent

from engine.presets import derive, load, save
from workbench.app.widgets.preset_list import PresetList
from workbench.app.widgets.sweep_dialog import SweepDialog

from app_helpers import capture_notes, make_app, wait_for
from run_factory import make_runs

WIDE = (120, 40)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


async def log_lines(pilot) -> str:
    tabs = pilot.app.query_one(TabbedContent)
    before = tabs.active
    pilot.app.main.show_tab("tab-log")
    log = pilot.app.query_one("#log", RichLog)
    await wait_for(pilot, lambda: log.size.width > 0, what="the log laid out")
    await pilot.pause()
    text = "\n".join(line.text for line in log.lines)
    pilot.app.main.show_tab(before)
    await pilot.pause()
    return text


async def test_tab_keys_work_from_a_select_with_focus_and_text_fields_keep_brackets():
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        tabs = app.query_one(TabbedContent)
        for tab, select in (("tab-sweeps", "#sweeps-study"), ("tab-runs", "#runs-preset")):
            app.main.show_tab(tab)
            await pilot.pause()
            app.query_one(select, Select).focus()
            await pilot.pause()
            await pilot.press("right_square_bracket")
            await wait_for(pilot, lambda: tabs.active != tab, what=f"] from {select}")
            await pilot.pause(0.2)
            assert tabs.active != tab                  # and it stays on the next tab
        app.main.show_tab("tab-presets")
        await pilot.pause()
        field = app.query_one("#field-input", Input)
        field.disabled = False
        field.focus()
        await pilot.pause()
        await pilot.press("left_square_bracket")
        assert field.value == "[" and tabs.active == "tab-presets"


async def test_a_preset_saved_from_another_terminal_appears_in_the_list():
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        presets = app.query_one(PresetList)
        assert "from-elsewhere" not in presets.names
        save(derive(load("cpu-demo"), "from-elsewhere"), "from-elsewhere")    # as another process would
        await wait_for(pilot, lambda: "from-elsewhere" in presets.names and presets.index is not None, timeout=10,
                       what="the list reloaded")
        assert presets.names[presets.index] == "cpu-demo"                     # the selection stays


async def test_damaged_run_files_are_told_in_the_log_and_once_per_run_as_a_toast(tmp_path):
    runs = make_runs(tmp_path / "runs")
    with (runs["finished"] / "metrics.jsonl").open("a", encoding="utf-8") as out:
        out.write("{not json\n")
        out.write('{"job": "train-dsr", "stage": "dsr", "epoch": "x"}\n')
    app = make_app(remember=False)
    notes = capture_notes(app)
    async with app.run_test(size=WIDE) as pilot:
        app.main.show_tab("tab-runs")
        await pilot.pause()
        table = app.query_one("#runs-table", DataTable)
        history = app.main.query_one("#runs")
        table.move_cursor(row=[row.name for row in history.shown].index(runs["finished"].name))
        await pilot.press("enter")                                           # reads its metrics
        await wait_for(pilot, lambda: any("damaged" in n for n in notes), what="the toast")
        text = await log_lines(pilot)
        assert "metrics.jsonl line" in text and "warning:" in text
        assert sum("damaged" in n and runs["finished"].name in n for n in notes) == 1


async def test_enter_in_the_space_file_field_loads_it_and_starts_nothing(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[params]\n"dsr.learning_rate" = { low = 1e-4, high = 1e-3 }\n', encoding="utf-8")
    app = make_app(remember=False)
    async with app.run_test(size=WIDE) as pilot:
        app.main.show_tab("tab-sweeps")
        await pilot.pause()
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, SweepDialog), what="the dialog")
        dialog = app.screen
        started = []
        dialog.start = lambda values: started.append(values)
        field = dialog.query_one("#sweep-space-file", Input)
        field.value = str(space)
        field.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert "dsr.learning_rate" in dialog.query_one("#sweep-space").text and started == []
        assert dialog.values()["space_file"] == str(space)           # the engine checks the file picked
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(started) == 1


async def test_ctrl_c_says_how_to_quit_without_markup():
    app = make_app(remember=False)
    notes = capture_notes(app)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert notes and "q quits" in notes[-1] and "[b]" not in notes[-1]


def test_the_status_line_fits_its_width_dropping_the_gpu_then_the_hint():
    from workbench.app.main_screen import fit_status

    job = "running train-dsr · dsr 2/30 · 45% · ETA 3m · 120.0 img/s"
    assert fit_status([job, "no GPU", "x stops it"], 200) == f"{job} · no GPU · x stops it"
    assert fit_status([job, "no GPU", "x stops it"], len(job) + 13) == f"{job} · x stops it"
    assert fit_status([job, "no GPU", "x stops it"], len(job) + 5) == job
    assert fit_status([job, "no GPU", "x stops it"], 20) == job[:19] + "…"


async def test_x_on_the_sweeps_tab_with_nothing_focused_is_the_tabs_stop_not_the_jobs():
    app = make_app(remember=False)
    notes = capture_notes(app)
    async with app.run_test(size=WIDE) as pilot:
        app.main.show_tab("tab-sweeps")
        await pilot.pause()
        app.set_focus(None)
        await pilot.pause()
        await pilot.press("x")
        assert notes and notes[-1].startswith("no sweep to stop")
        app.main.show_tab("tab-charts")
        await pilot.pause()
        await pilot.press("x")
        assert notes[-1] == "no job is running"
