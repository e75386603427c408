"""The preset list: built-ins and the user's presets; arrows or number keys 1-9 switch (every preset is also in
the command palette). While shown it follows the presets folder: a preset saved from another terminal or by a
sweep appears by itself (stat calls every POLL_SECONDS, the list rebuilt only when a name or a file changed)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from textual.message import Message
from textual.widgets import Label, ListItem, ListView

from engine.presets import list_presets, user_dir
from workbench.app.widgets.polling import PollWhileShown

POLL_SECONDS = 2.0


def presets_stamp() -> tuple[tuple[str, int], ...]:
    """The user's preset files and their modification times (what a reload would see differently)."""
    try:
        with os.scandir(user_dir()) as entries:
            return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries if e.name.endswith(".toml")))
    except OSError:
        return ()


class PresetList(PollWhileShown, ListView):
    BORDER_TITLE = "Presets"
    BORDER_SUBTITLE = "yours in italics"

    @dataclass
    class Chosen(Message):
        """The user picked a preset in the list (by name)."""
        name: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names: list[str] = []
        self.selected = ""
        self._stamp: tuple[tuple[str, int], ...] | None = None

    def on_mount(self) -> None:
        self.start_polling(POLL_SECONDS)

    def poll(self) -> None:
        if self._stamp is not None and presets_stamp() != self._stamp:
            self.run_worker(self.reload(self.selected), group="presets", exclusive=True)

    async def reload(self, selected: str) -> None:
        """Rebuild the items from disk and highlight ``selected`` without announcing it."""
        self._stamp = presets_stamp()
        self.selected = selected
        entries = list_presets()
        self.names = [e.name for e in entries]
        await self.clear()
        items = []
        for number, entry in enumerate(entries, start=1):
            shortcut = f"{number} " if number <= 9 else "  "
            label = Label(f"{shortcut}{entry.name}", classes="builtin" if entry.builtin else "user")
            label.tooltip = "built-in (read-only)" if entry.builtin else str(entry.path)
            items.append(ListItem(label, name=entry.name))
        await self.extend(items)
        if selected in self.names:
            with self.prevent(ListView.Highlighted):
                self.index = self.names.index(selected)

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        event.stop()
        if event.item is not None and event.item.name:
            self.post_message(self.Chosen(event.item.name))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
