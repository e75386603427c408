"""The dialog that starts a sweep from the selected preset: study name, budget, what a trial runs, the
objective, and the search space (a TOML file loaded, or edited here). ``start(values)`` returns an
error to show (the space or objective checked by the engine) or None when the sweep started."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from engine.sweep.storage import masked

DEFAULT_SPACE = """[params]
"dsr.learning_rate" = { low = 1e-4, high = 1e-3, log = true }
"dsr.lambda_identity" = { low = 0.0, high = 0.4, step = 0.1 }
"""


class SweepDialog(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="sweep.cancel"),
                Binding("ctrl+s", "start", "Start", id="sweep.start")]

    def __init__(self, study: str, jobs: tuple[str, ...], space: str, start: Callable[[dict[str, Any]], str | None],
                 cursor_blink: bool = True, storage: str = "") -> None:
        super().__init__()
        self.storage = storage
        self.study, self.jobs, self.space, self.start = study, jobs, space or DEFAULT_SPACE, start
        self.cursor_blink = cursor_blink
        self.loaded: tuple[str, str] | None = None     # (file, text) last loaded into the space editor

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog sweep"):
            yield Static("New sweep from the selected preset (ctrl+s starts, Esc cancels):", classes="dialog-text")
            with Horizontal(classes="sweep-row"):
                yield Label("study")
                yield self._input(self.study, "sweep-study")
                yield Label("trials")
                yield self._input("8", "sweep-trials", width=True)
                yield Label("parallel")
                yield self._input("1", "sweep-parallel", width=True)
            with Horizontal(classes="sweep-row"):
                yield Label("trial job")
                yield Select([(job, job) for job in self.jobs], value=self.jobs[0], allow_blank=False,
                             id="sweep-job", compact=True)
                yield Label("objective")
                yield self._input("val.psnr", "sweep-objective")
            with Horizontal(classes="sweep-row"):
                yield Label("storage")
                yield self._input(masked(self.storage), "sweep-storage", placeholder="empty: a journal file; or postgresql://USER@HOST/DB")
            with Horizontal(classes="sweep-row"):
                yield Label("space file")
                yield self._input("", "sweep-space-file", placeholder="a TOML file (Enter loads it), or edit below")
            area = TextArea(self.space, id="sweep-space", language=None, show_line_numbers=False)
            area.cursor_blink = self.cursor_blink
            yield area
            yield Static("", id="sweep-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", variant="primary", id="sweep-go")
                yield Button("Cancel", id="sweep-cancel")

    def _input(self, value: str, name: str, width: bool = False, placeholder: str = "") -> Input:
        field = Input(value=value, id=name, placeholder=placeholder, classes="-narrow" if width else "")
        field.cursor_blink = self.cursor_blink
        return field

    def _error(self, text: str) -> None:
        self.query_one("#sweep-error", Static).update(Text(text, style="red"))

    @on(Input.Submitted, "#sweep-space-file")
    def _load_space(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value.strip()).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
            self.query_one("#sweep-space", TextArea).text = text
            self.loaded = (str(path), text)
            self._error("")
            self.notify(f"loaded {path}: ctrl+s (or Enter in another field) starts the sweep")
        except (OSError, UnicodeDecodeError) as exc:
            self._error(f"cannot read {path} ({exc}): give a TOML file with a [params] table.")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id != "sweep-space-file":       # Enter there loads the file (above), nothing more
            self.action_start()

    @on(Button.Pressed, "#sweep-go")
    def _go(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#sweep-cancel")
    def _cancel_button(self) -> None:
        self.action_cancel()

    def values(self) -> dict[str, Any] | None:
        """The form's values; None (with the reason shown) when a number is not one."""
        numbers = {}
        for name in ("trials", "parallel"):
            text = self.query_one(f"#sweep-{name}", Input).value.strip()
            if not text.isdigit() or int(text) < 1:
                self._error(f"{name}: a whole number of at least 1, not {text!r}.")
                return None
            numbers[name] = int(text)
        space = self.query_one("#sweep-space", TextArea).text
        return {"study": self.query_one("#sweep-study", Input).value.strip(),
                "space_file": self.loaded[0] if self.loaded and self.loaded[1] == space else "",
                "job": self.query_one("#sweep-job", Select).value,
                "objective": self.query_one("#sweep-objective", Input).value.strip(),
                "storage": self._storage(),
                "space": space, **numbers}

    def _storage(self) -> str | None:
        """The storage field's URL: the app's own (its password) while the field shows it masked."""
        text = self.query_one("#sweep-storage", Input).value.strip()
        return self.storage if self.storage and text == masked(self.storage) else text or None

    def action_start(self) -> None:
        values = self.values()
        if values is None:
            return
        problem = self.start(values)
        if problem:
            self._error(problem)
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)
