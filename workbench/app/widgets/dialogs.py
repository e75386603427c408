"""Modal dialogs: confirm, save-as, tip diff and help."""

from __future__ import annotations

from typing import Any, Callable

from rich import box
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from engine.errors import WorkbenchError
from engine.presets import check_name, show_value


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; y/Enter confirm, n/Esc cancel."""

    BINDINGS = [Binding("y", "answer(True)", "Yes", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "No", id="confirm.no")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="warning", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class SaveAsDialog(ModalScreen[str | None]):
    """Ask for a new preset name; ``save(name)`` returns an error message or None when saved."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="saveas.cancel")]

    def __init__(self, suggestion: str, save: Callable[[str], str | None], cursor_blink: bool = True) -> None:
        super().__init__()
        self.suggestion = suggestion
        self.save = save
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Save the preset under a new name (your presets folder):", classes="dialog-text")
            field = Input(value=self.suggestion, id="saveas-name")
            field.cursor_blink = self.cursor_blink
            yield field
            yield Static("", id="saveas-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        name = event.value.strip()
        error = self.query_one("#saveas-error", Static)
        try:
            check_name(name, "the preset name")   # the rule of the engine and the CLI (presets save-as)
        except WorkbenchError as exc:
            error.update(Text(str(exc), style="red"))
            return
        problem = self.save(name)
        if problem:
            error.update(Text(problem, style="red"))
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TipDiffDialog(ModalScreen[bool]):
    """The preset changes a tip makes, shown before they are applied."""

    BINDINGS = [Binding("y", "answer(True)", "Apply", id="tip.apply"),
                Binding("n,escape", "answer(False)", "Cancel", id="tip.cancel")]

    def __init__(self, title: str, changes: list[tuple[str, Any, Any]]) -> None:
        super().__init__()
        self.tip_title = title
        self.changes = changes

    def compose(self) -> ComposeResult:
        table = Table(title=f"Tip: {self.tip_title}", expand=True)
        table.add_column("field")
        table.add_column("now")
        table.add_column("after the tip", style="bold green")
        for key, old, new in self.changes:
            table.add_row(key, show_value(old), show_value(new))
        with Vertical(classes="dialog"):
            yield Static(table)
            yield Static("Apply to the current preset? (y/n) It stays unsaved until ctrl+s or save-as.",
                         classes="dialog-text")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class RunDiffDialog(ModalScreen[None]):
    """Two runs, A and B: their headline metrics with deltas first, then the preset keys they differ in
    (one table above the other, so the deltas show at any width)."""

    BINDINGS = [Binding("escape,q,d", "close", "Close", id="rundiff.close")]

    def __init__(self, a: Any, b: Any, labels: tuple[str, str]) -> None:
        from engine.runs.index import metric_deltas, preset_diff

        super().__init__()
        self.labels = (f"A {labels[0]}", f"B {labels[1]}")
        self.names = (a.name, b.name)
        self.changes = preset_diff(a, b)          # WorkbenchError when a preset cannot be read
        self.deltas = metric_deltas(a, b)

    def compose(self) -> ComposeResult:
        a, b = self.labels
        presets = Table(title="preset keys that differ", expand=True)
        presets.add_column("key")
        presets.add_column(a, overflow="fold")
        presets.add_column(b, overflow="fold")
        for key, old, new in self.changes:
            presets.add_row(key, show_value(old), show_value(new))
        if not self.changes:
            presets.add_row("(same preset values)", "", "")
        metrics = Table(title="metrics (change = B - A)", expand=True)
        for column in ("metric", a, b, "change"):
            metrics.add_column(column, justify="left" if column == "metric" else "right", overflow="fold")
        for delta in self.deltas:
            change = delta.change
            style = "" if not change else ("green" if change > 0 else "red")
            metrics.add_row(delta.metric, _number(delta.metric, delta.a), _number(delta.metric, delta.b),
                            Text(_number(delta.metric, change, signed=True), style=style))
        self.tables = (metrics, presets)
        names = Text.assemble(("A", "bold"), f" = {self.names[0]}   ", ("B", "bold"), f" = {self.names[1]}")
        with VerticalScroll(classes="dialog help", id="rundiff"):
            yield Static(names, id="rundiff-names", classes="dialog-text")
            yield Static(metrics, id="rundiff-metrics")
            yield Static(presets, id="rundiff-presets")
            yield Static("Esc closes.", classes="dialog-text")

    def action_close(self) -> None:
        self.dismiss(None)


def _number(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if metric.startswith("rank-1"):
        value *= 100
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    if metric == "epochs":
        text = f"{value:+.0f}" if signed else f"{value:.0f}"
    return text + (" pt" if metric.startswith("rank-1") else "")


class HelpDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str]], notes: str) -> None:
        super().__init__()
        self.rows = rows
        self.notes = notes

    def compose(self) -> ComposeResult:
        table = Table(title="vlr-workbench keys", expand=True, show_header=False, box=box.SIMPLE, show_edge=False,
                      padding=(0, 1))
        table.add_column("key", style="bold")
        table.add_column("action")
        for key, description in self.rows:
            table.add_row(Text(key), Text(description))      # Text: '[' and ']' are keys, not markup
        with VerticalScroll(classes="dialog help"):
            yield Static(table)
            yield Static(self.notes, classes="dialog-text", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
