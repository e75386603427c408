"""The preset list: built-ins and the user's presets; arrows or number keys 1-9 switch."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.widgets import Label, ListItem, ListView

from engine.presets import list_presets


class PresetList(ListView):
    BORDER_TITLE = "Presets"
    BORDER_SUBTITLE = "yours in italics"

    @dataclass
    class Chosen(Message):
        """The user picked a preset in the list (by name)."""
        name: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.names: list[str] = []

    async def reload(self, selected: str) -> None:
        """Rebuild the items from disk and highlight ``selected`` without announcing it."""
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
