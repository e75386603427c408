"""The samples view: a DSR run's ``samples/epoch_NNN.png`` strips (VLR | bicubic | SR | HR per row).

Drawn with textual-image: Kitty graphics or Sixel where the terminal answers for them, coloured
half-cell blocks otherwise (SSH, tmux, the browser through ``serve``, tests). The protocol is
detected when this module is imported, before the app takes the terminal. Left/right (or , and
.) step through the epochs, home/end jump to the first/last; new strips of a running job appear.
"""

from __future__ import annotations

import sys
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_image.widget import HalfcellImage
from textual_image.widget import Image as AutoImage

from engine.runs.records import read_image, sample_strips as strips_of, stage_dirs

COLUMNS_NOTE = "each row: VLR (nearest) | bicubic | SR (DSR) | HR"


def image_class() -> type:
    """The terminal's best image widget; half-cell blocks when not on a terminal (served, tested)."""
    return AutoImage if sys.__stdout__ is not None and sys.__stdout__.isatty() else HalfcellImage


def sample_strips(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, png) of every sample strip of a run (for a pipeline: of its DSR stage), by epoch."""
    return strips_of([run_dir, *stage_dirs(run_dir)])


class SamplesScreen(Screen[None]):
    BINDINGS = [
        Binding("left,comma", "step(-1)", "Previous epoch", id="samples.previous"),
        Binding("right,full_stop", "step(1)", "Next epoch", id="samples.next"),
        Binding("home", "jump(0)", "First", id="samples.first"),
        Binding("end", "jump(-1)", "Last", id="samples.last"),
        Binding("escape,v,q", "close", "Back", id="samples.close"),
    ]

    def __init__(self, run_dir: Path, image_widget: type | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.strips = sample_strips(self.run_dir)
        self.position = len(self.strips) - 1
        self.image_widget = image_widget or image_class()

    def compose(self) -> ComposeResult:
        with Vertical(id="samples"):
            yield Static("", id="samples-title")
            with Center(id="samples-frame"):
                yield self.image_widget(None, id="samples-image")
            yield Static(COLUMNS_NOTE, id="samples-note")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show()

    @property
    def epoch(self) -> int | None:
        return self.strips[self.position][0] if self.strips else None

    def _show(self) -> None:
        title = self.query_one("#samples-title", Static)
        if not self.strips:
            title.update(f"{self.run_dir.name}: no sample strips yet (train-dsr writes one per epoch)")
            return
        epoch, path = self.strips[self.position]
        image = read_image(path)          # checked first: a junk file shows no picture, said in the title
        self.query_one("#samples-image").image = None if image is None else str(path)
        epochs = [e for e, _ in self.strips]
        title.update(f"{self.run_dir.name} · epoch {epoch}{'' if image else ' (not a readable image)'} "
                     f"({self.position + 1} of {len(epochs)}: {epochs[0]}-{epochs[-1]}) · ←/→ step · home/end · "
                     "Esc back")

    def reload(self) -> None:
        """Pick up strips written since the view opened (a running job); stays on the shown epoch
        unless it was showing the last one."""
        at_end = self.position == len(self.strips) - 1
        shown = self.epoch
        self.strips = sample_strips(self.run_dir)
        epochs = [e for e, _ in self.strips]
        self.position = len(self.strips) - 1 if at_end or shown not in epochs else epochs.index(shown)
        self._show()

    def action_step(self, delta: int) -> None:
        if not self.strips:
            self.notify("this run has no sample strips", severity="warning")
            return
        target = self.position + delta
        if not 0 <= target < len(self.strips):
            self.notify(f"already at the {'first' if delta < 0 else 'last'} epoch ({self.epoch})", severity="warning")
            return
        self.position = target
        self._show()

    def action_jump(self, index: int) -> None:
        if not self.strips:
            self.notify("this run has no sample strips", severity="warning")
            return
        self.position = index % len(self.strips)
        self._show()

    def action_close(self) -> None:
        self.dismiss(None)
