"""The Presets tab: the preset list beside the editor, and the tab's keys (ctrl+s saves, a saves as).

The App holds the current preset (edits arrive as ``PresetEditor.Edited``, a choice as ``PresetList.Chosen``);
this tab writes the files and posts ``Saved`` with the name written. While shown, the list follows the presets
folder (a preset saved from another terminal appears by itself: ``PresetList.poll``).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message

from engine.errors import WorkbenchError
from engine.presets import Preset, builtin_names, derive, save
from workbench.app.widgets.dialogs import SaveAsDialog
from workbench.app.widgets.preset_editor import PresetEditor
from workbench.app.widgets.preset_list import PresetList


def save_as_suggestion(name: str) -> str:
    return f"my-{name}" if name in builtin_names() else f"{name}-copy"


class PresetsTab(Horizontal):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="preset.save", tooltip="save the preset (your presets only)"),
        Binding("a", "save_as", "Save as", id="preset.save_as", tooltip="save the preset under a new name"),
    ]

    @dataclass
    class Saved(Message):
        """The shown preset was written as ``name`` (``new``: under a new name, by save as)."""
        name: str
        path: str
        new: bool

    def compose(self) -> ComposeResult:
        yield PresetList(id="presets")
        yield PresetEditor(id="editor")

    def why_disabled(self, action: str) -> str:
        preset, saved = self.app.preset, self.app.saved
        if action == "save" and preset.name in builtin_names():
            return "built-in presets are read-only: a saves a copy"
        if action == "save" and preset == saved:
            return "no unsaved changes"
        return ""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.why_disabled(action) else True

    def action_save(self) -> None:
        preset = self.app.preset
        try:
            path = save(preset, preset.name, overwrite=True)
        except WorkbenchError as exc:
            self.notify(str(exc), title="not saved", severity="error", timeout=10)
            return
        self.post_message(self.Saved(preset.name, str(path), new=False))

    def action_save_as(self) -> None:
        preset: Preset = self.app.preset

        def save_copy(name: str) -> str | None:
            try:
                save(derive(preset, name), name)
            except WorkbenchError as exc:
                return str(exc)
            return None

        def saved(name: str | None) -> None:
            if name:
                self.post_message(self.Saved(name, "", new=True))
        self.app.push_screen(SaveAsDialog(save_as_suggestion(preset.name), save_copy, self.app.cursor_blink), saved)
