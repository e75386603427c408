"""Snapshot tests of the app's screens at 120x40 and 80x24 (fixed data, no clock, "no GPU").

Regenerate after a deliberate change with ``pytest tests/test_app_snapshots.py --snapshot-update``
and look at the SVGs in tests/__snapshots__.
"""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, TabbedContent

from workbench.app.widgets.vram_gauge import VramGauge

from app_helpers import make_app, use_fake_job, wait_for

WIDE, NARROW = (120, 40), (80, 24)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


async def settle(pilot) -> None:
    """Wait until the VRAM gauge has its reading, then drop notifications."""
    await wait_for(pilot, lambda: pilot.app.query_one(VramGauge).reading is not None, what="the VRAM reading")
    await pilot.pause(0.5)
    pilot.app.clear_notifications()
    await pilot.pause()


async def run_job_and_show(pilot, key: str, tab: str) -> None:
    await settle(pilot)
    await pilot.press(key)
    await wait_for(pilot, lambda: not pilot.app.jobs.running, what="the job")
    pilot.app.query_one(TabbedContent).active = tab
    await pilot.pause(0.8)  # at least two chart timer ticks
    pilot.app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["120x40", "80x24"])
def test_presets_screen(snap_compare, size):
    assert snap_compare(make_app(remember=False), terminal_size=size, run_before=settle)


def test_editor_shows_an_invalid_value_inline(snap_compare):
    async def edit(pilot):
        await settle(pilot)
        table = pilot.app.query_one("#fields", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("dsr.learning_rate"))
        await pilot.press("enter")
        pilot.app.query_one("#field-input", Input).value = ""
        await pilot.press("2", "e", "-", "3")      # valid: applied and marked
        pilot.app.query_one("#field-input", Input).value = ""
        await pilot.press("-", "1")                # invalid: the message shows, nothing changes
        await pilot.pause()

    assert snap_compare(make_app(remember=False), terminal_size=WIDE, run_before=edit)


def test_charts_after_a_training_job(snap_compare, monkeypatch):
    use_fake_job(monkeypatch, "train-dsr", "quick_train")
    assert snap_compare(make_app(remember=False), terminal_size=WIDE,
                        run_before=lambda pilot: run_job_and_show(pilot, "t", "tab-charts"))


def test_results_after_evaluate_narrow(snap_compare, monkeypatch):
    use_fake_job(monkeypatch, "evaluate", "evaluate")
    assert snap_compare(make_app(remember=False), terminal_size=NARROW,
                        run_before=lambda pilot: run_job_and_show(pilot, "e", "tab-results"))
