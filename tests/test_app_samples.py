"""The samples view: VLR | bicubic | SR | HR strips of a run, stepped through by epoch (half-cell blocks
in tests), opened from the Runs tab or for the preset's latest DSR run; snapshots at 120x40 and 80x24."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, TabbedContent
from textual_image.widget import HalfcellImage

from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.samples_view import SamplesScreen, image_class, sample_strips
from workbench.app.widgets.vram_gauge import VramGauge

from app_helpers import make_app, wait_for
from run_factory import make_runs


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_runs(tmp_path / "runs")


def test_sample_strips_are_listed_by_epoch(runs):
    assert [epoch for epoch, _ in sample_strips(runs["finished"])] == [1, 2, 3]
    assert sample_strips(runs["fast"]) == []
    assert image_class() is HalfcellImage        # not a terminal: half-cell blocks


async def test_v_steps_through_the_epochs_of_the_latest_dsr_run(runs):
    app = make_app(remember=False)
    notes = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.notify = lambda message, **kw: notes.append(message)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, SamplesScreen), what="the samples view")
        view = app.screen
        assert view.run_dir.name == runs["finished"].name and view.epoch == 3       # opens on the last epoch
        image = view.query_one("#samples-image", HalfcellImage)
        assert str(image.image).endswith("epoch_003.png")
        assert image.size.width > 10 and image.size.height > 5
        await pilot.press("left")
        assert view.epoch == 2 and str(image.image).endswith("epoch_002.png")
        await pilot.press("home")
        assert view.epoch == 1
        await pilot.press("left")                                    # cannot go further: says why
        assert view.epoch == 1 and "already at the first epoch (1)" in notes[-1]
        await pilot.press("end", "comma")
        assert view.epoch == 2 and "epoch 2 (2 of 3: 1-3)" in str(view.query_one("#samples-title").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, SamplesScreen)


async def test_v_on_a_run_without_samples_says_why(runs):
    app = make_app(remember=False)
    notes = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.notify = lambda message, **kw: notes.append(message)
        app.query_one(TabbedContent).active = "tab-runs"
        history = app.query_one(RunHistory)
        table = history.query_one(DataTable)
        table.focus()
        table.move_cursor(row=[r.name for r in history.shown].index(runs["fast"].name))
        await pilot.press("v")
        await pilot.pause()
        assert not isinstance(app.screen, SamplesScreen) and "has no sample strips" in notes[-1]
        table.move_cursor(row=[r.name for r in history.shown].index(runs["finished"].name))
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, SamplesScreen), what="the samples view")


async def show_epoch_two(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.query_one(VramGauge).reading is not None, what="the VRAM reading")
    await pilot.press("v")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SamplesScreen), what="the samples view")
    await pilot.press("left")
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_samples_view_snapshot(snap_compare, size):
    assert snap_compare(make_app(remember=False), terminal_size=size, run_before=show_epoch_two)
