"""The preset editor: every field grouped by section, with its description, range and built-in value.

A row shows ``●`` when the value differs from the saved preset and the value in bold when it
differs from the built-in it derives from. Typing in the field input validates at once
(``Preset.with_changes``); a valid value is applied and announced with ``PresetEditor.Edited``, an invalid
one shows the ``PresetError`` message under the input and changes nothing.
"""

from __future__ import annotations

from rich.text import Text
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from engine.errors import PresetError
from engine.presets import FIELDS, SECTIONS, Preset, show_value
from workbench.app.field_values import edit_text, parse_value

SECTION_ROW = "section:"
MIN_VALUE_WIDTH = 10


class PresetEditor(Vertical):
    BORDER_TITLE = "Preset"
    BINDINGS = [Binding("escape", "back_to_table", "Back to fields", show=False, id="editor.back")]

    @dataclass
    class Edited(Message):
        """The editor produced a valid changed preset."""
        preset: Preset

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.preset: Preset | None = None
        self.shown_widths: tuple[int, int, int] | None = None    # the column widths of the table shown
        self.saved: Preset | None = None
        self.base: Preset | None = None
        self.base_label = "built-in"
        self.selected_key: str | None = None

    def compose(self) -> ComposeResult:
        yield DataTable(id="fields", cursor_type="row", zebra_stripes=True)
        with Vertical(id="field-detail"):
            yield Static("", id="field-help")
            yield Input(id="field-input", compact=True, placeholder="select a field, then type its value")
            yield Static("", id="field-error")

    def show(self, preset: Preset, saved: Preset, base: Preset, base_label: str) -> None:
        """Fill the table with ``preset``; marks compare with ``saved`` and ``base``."""
        self.preset, self.saved, self.base, self.base_label = preset, saved, base, base_label
        self.border_title = f"Preset {preset.name}" + (f" ← {preset.derived_from}" if preset.derived_from else "")
        table = self.query_one("#fields", DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)
        self.shown_widths = self.column_widths(table.size.width)
        key_width, value_width, base_width = self.shown_widths
        table.add_column(" ", key="mark", width=1)
        table.add_column("field", key="key", width=key_width)
        table.add_column("value", key="value", width=value_width)
        table.add_column(Text(base_label.removeprefix("from ")), key="base", width=base_width)
        for section in SECTIONS:
            table.add_row("", Text(f"[{section}]", style="bold"), "", "", key=SECTION_ROW + section)
            for key, info in FIELDS.items():
                if info.section == section:
                    table.add_row(*self._cells(key), key=key)
        if cursor:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self._show_detail(self.selected_key)

    def column_widths(self, width: int) -> tuple[int, int, int]:
        """Widths of the field, value and reference columns for a table ``width`` cells wide.

        Fixed widths that fit the table: a long value (a path) is cut with '…' in its own column
        and never pushes the reference column out of sight; the reference column is as wide as its
        widest value when there is room, so 1.3e-4 never reads as "1.3e".
        """
        key_width = max(len(key.split(".", 1)[1]) for key in FIELDS)
        base_needed = max([len(self.base_label.removeprefix("from "))] + ([len(show_value(self.base.get(k))) for k in FIELDS]
                                                    if self.base is not None else [8]))
        padding = 2 * 4                      # one cell each side of the four columns
        room = width - padding - 1 - key_width - 2   # the mark column and a vertical scrollbar
        if room < 2 * MIN_VALUE_WIDTH:
            return key_width, MIN_VALUE_WIDTH, MIN_VALUE_WIDTH      # too narrow: scroll sideways
        base_width = min(base_needed, max(MIN_VALUE_WIDTH, room // 2))
        return key_width, room - base_width, base_width

    def on_resize(self) -> None:
        """Refill the table when its column widths change with the size (not on every resize)."""
        if self.preset is None:
            return
        if self.column_widths(self.query_one("#fields", DataTable).size.width) != self.shown_widths:
            self.call_after_refresh(self.show, self.preset, self.saved, self.base, self.base_label)

    def _cells(self, key: str) -> tuple[Text, Text, Text, Text]:
        value, saved, base = self.preset.get(key), self.saved.get(key), self.base.get(key)
        mark = Text("●", style="bold yellow") if value != saved else Text("")
        shown = Text(show_value(value), style="bold" if value != base else "", no_wrap=True, overflow="ellipsis")
        return (mark, Text(key.split(".", 1)[1]), shown,
                Text(show_value(base), style="dim", no_wrap=True, overflow="ellipsis"))

    def _refresh_row(self, key: str) -> None:
        table = self.query_one("#fields", DataTable)
        for column, cell in zip(("mark", "key", "value", "base"), self._cells(key)):
            table.update_cell(key, column, cell)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = event.row_key.value
        self._show_detail(None if key is None or key.startswith(SECTION_ROW) else key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.selected_key:
            self.query_one("#field-input", Input).focus()

    def _show_detail(self, key: str | None) -> None:
        self.selected_key = key
        field_input = self.query_one("#field-input", Input)
        self.query_one("#field-error", Static).update("")
        field_input.remove_class("-invalid")
        if key is None or self.preset is None:
            self.query_one("#field-help", Static).update("Enter edits the highlighted field; Esc comes back.")
            field_input.disabled = True
            with field_input.prevent(Input.Changed):
                field_input.value = ""
            return
        info = FIELDS[key]
        help_text = Text.assemble((key, "bold"), f": {info.help}\n", ("range ", "dim"), info.range_text(),
                                  ("  ·  built-in ", "dim"), show_value(self.base.get(key)),
                                  ("  ·  saved ", "dim"), show_value(self.saved.get(key)))
        self.query_one("#field-help", Static).update(help_text)
        field_input.disabled = False
        with field_input.prevent(Input.Changed):
            field_input.value = edit_text(self.preset.get(key))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        key, preset = self.selected_key, self.preset
        if key is None or preset is None:
            return
        error = self.query_one("#field-error", Static)
        try:
            changed = preset.with_changes({key: parse_value(event.value)}, source="editor")
        except PresetError as exc:
            error.update(Text(str(exc), style="red"))
            event.input.add_class("-invalid")
            return
        error.update("")
        event.input.remove_class("-invalid")
        if changed != preset:
            self.preset = changed
            self._refresh_row(key)
            self.post_message(self.Edited(changed))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_back_to_table()

    def action_back_to_table(self) -> None:
        self.query_one("#fields", DataTable).focus()
