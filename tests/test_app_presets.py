"""Pilot tests of the preset flows: switch by key, edit (valid and invalid), save, save-as."""

from __future__ import annotations

import tomllib

import pytest

from workbench.app.key_map import APP_KEYS, scoped_bindings
from workbench.app.widgets.presets_tab import PresetsTab
from textual.widgets import DataTable, Input, Static

from engine.presets import list_presets, load, user_dir
from workbench.app.app_state import read_last_preset, state_path
from workbench.app.widgets.preset_list import PresetList

from app_helpers import make_app, wait_for


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


async def select_field(pilot, key: str) -> Input:
    table = pilot.app.query_one("#fields", DataTable)
    table.focus()
    table.move_cursor(row=table.get_row_index(key))
    await pilot.press("enter")
    field_input = pilot.app.query_one("#field-input", Input)
    assert field_input.has_focus
    return field_input


async def type_value(pilot, field_input: Input, text: str) -> None:
    field_input.value = ""
    await pilot.press(*text)
    await pilot.pause()


async def test_number_keys_and_arrows_switch_presets_and_remember_the_last():
    app = make_app("cpu-demo")
    names = [e.name for e in list_presets()]
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: app.preset.name == names[2], what="preset 3")
        assert app.sub_title == names[2]
        assert read_last_preset() == names[2]
        app.query_one(PresetList).focus()
        await pilot.press("up")
        await wait_for(pilot, lambda: app.preset.name == names[1], what="preset above")
        await pilot.press("9")  # there are fewer than 9 presets: a warning, no switch
        await pilot.pause()
        assert app.preset.name == names[1]
    assert tomllib.loads(state_path().read_text())["last_preset"] == names[1]


async def test_edit_valid_value_marks_field_and_invalid_value_shows_error():
    app = make_app("cpu-demo", remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        field_input = await select_field(pilot, "dsr.learning_rate")
        assert float(field_input.value) == load("cpu-demo").dsr.learning_rate
        await type_value(pilot, field_input, "3e-3")
        assert app.preset.dsr.learning_rate == pytest.approx(0.003)
        assert app.dirty and "(unsaved)" in app.sub_title
        table = app.query_one("#fields", DataTable)
        assert str(table.get_cell("dsr.learning_rate", "mark")) == "●"
        assert str(table.get_cell("dsr.learning_rate", "value")) == "0.003"
        assert str(table.get_cell("dsr.batch_size", "mark")) == ""

        await type_value(pilot, field_input, "-1")
        error = str(app.query_one("#field-error", Static).render())
        assert "dsr.learning_rate" in error and "out of range" in error
        assert field_input.has_class("-invalid")
        assert app.preset.dsr.learning_rate == pytest.approx(0.003)  # the invalid value changed nothing

        await type_value(pilot, field_input, "fast")
        assert "must be a number" in str(app.query_one("#field-error", Static).render())
        await type_value(pilot, field_input, "0.003")
        assert str(app.query_one("#field-error", Static).render()) == ""
        assert app.preset.dsr.learning_rate == pytest.approx(0.003)
        await pilot.press("escape")
        assert table.has_focus

        # ctrl+s is disabled on a built-in (read-only), with the reason in the status line
        assert app.query_one(PresetsTab).check_action("save", ()) is None
        assert "a = save as" in str(app.query_one("#statusline", Static).render())


async def test_save_as_then_edit_and_save_a_user_preset():
    app = make_app("cpu-demo", remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        field_input = await select_field(pilot, "dsr.epochs")
        await type_value(pilot, field_input, "3")
        await pilot.press("escape", "a")
        name_input = app.screen.query_one("#saveas-name", Input)
        assert name_input.value == "my-cpu-demo"
        name_input.value = "vlr-32x32"  # a built-in name: refused inline
        await pilot.press("enter")
        assert "read-only" in str(app.screen.query_one("#saveas-error", Static).render())
        name_input.value = "bad name"
        await pilot.press("enter")
        assert "letters, digits" in str(app.screen.query_one("#saveas-error", Static).render())
        name_input.value = "mine"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.preset.name == "mine", what="switch to the saved preset")

        saved = load("mine")
        assert (user_dir() / "mine.toml").is_file()
        assert saved.dsr.epochs == 3 and saved.derived_from == "cpu-demo"
        assert "mine" in app.query_one(PresetList).names and not app.dirty
        assert app.query_one("#fields", DataTable).columns["base"].label.plain == "cpu-demo"   # the parent preset (the border names it too)
        assert app.query_one(PresetsTab).check_action("save", ()) is None  # nothing to save yet

        field_input = await select_field(pilot, "dsr.epochs")
        await type_value(pilot, field_input, "5")
        assert app.query_one(PresetsTab).check_action("save", ()) is True
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert load("mine").dsr.epochs == 5 and not app.dirty
        assert str(app.query_one("#fields", DataTable).get_cell("dsr.epochs", "mark")) == ""


async def test_unsaved_edits_survive_switching_presets():
    app = make_app("cpu-demo", remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        field_input = await select_field(pilot, "dsr.epochs")
        await type_value(pilot, field_input, "2")
        await pilot.press("escape", str([e.name for e in list_presets()].index("cpu-real") + 1))
        await wait_for(pilot, lambda: app.preset.name != "cpu-demo", what="switch away")
        assert not app.dirty
        await pilot.press(str([e.name for e in list_presets()].index("cpu-demo") + 1))
        await wait_for(pilot, lambda: app.preset.name == "cpu-demo", what="switch back")
        assert app.preset.dsr.epochs == 2 and app.dirty


async def test_command_palette_mirrors_the_keys_and_says_why_an_action_is_disabled():
    app = make_app("cpu-demo", remember=False)
    notes = []
    async with app.run_test(size=(120, 40)) as pilot:
        app.notify = lambda message, **kw: notes.append(message)
        commands = {c.title.split(":")[0]: c for c in app.get_system_commands(app.screen)}
        for title in ("Train (t)", "Eval (e)", "Stop (x)", "Save (ctrl+s on the Presets tab)",
                      "Save as (a on the Presets tab)", "Attach (a on the Runs tab)", "Stop sweep (x on the Sweeps tab)",
                      "Help (?)", "Quit (q)", "Open preset cpu-real"):
            assert any(c.title.startswith(title) for c in commands.values()), title
        assert all(b.id for b in app.BINDINGS if b.key in APP_KEYS)
        assert all(b.id for _, _, b in scoped_bindings(app))
        await commands["Stop (x)"].callback()
        await commands["Save (ctrl+s on the Presets tab)"].callback()
        await pilot.pause()                 # (the palette runs one command at a time)
        assert notes == ["no job is running", "built-in presets are read-only: a saves a copy"]
        commands["Show charts"].callback()
        await pilot.pause()
        assert app.query_one("TabbedContent").active == "tab-charts"
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpDialog"
        await pilot.press("escape")
        assert type(app.screen).__name__ != "HelpDialog"
