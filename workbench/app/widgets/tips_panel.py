"""Tips (engine.tips) for the current metric history and preset, and the guide's targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from engine.presets import Preset
from engine.tips import Target, Tip, check_targets, propose_tips


def format_target(target: Target) -> Text:
    def show(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value * 100:.1f}%" if target.unit == "%" else f"{value:.4g}{(' ' + target.unit) if target.unit else ''}"

    mark = ("✓", "green") if target.met else (("·", "dim") if target.value is None else ("✗", "red"))
    return Text.assemble(mark, f" {target.name}: {show(target.value)} (target {target.comparison} "
                               f"{show(target.target)})")


class TipsPanel(Vertical):
    BORDER_TITLE = "Tips"

    @dataclass
    class Chosen(Message):
        """The user asked to apply a tip to the current preset."""
        tip: Any

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tips: list[Tip] = []
        self.source = "the last job"

    def compose(self) -> ComposeResult:
        yield OptionList(id="tips-list")
        yield Static("", id="tip-detail")
        yield Static("", id="targets")

    def on_mount(self) -> None:
        self.border_subtitle = "y applies the highlighted tip (diff shown before saving)"

    def update_tips(self, history: list[dict[str, Any]], preset: Preset, evaluation: dict | None,
                    source: str = "the last job") -> None:
        """Tips for ``history`` (of ``source``: the last job, or a run opened in the Runs tab)."""
        self.source = source
        self.border_title = f"Tips · {source}"
        self.tips = propose_tips(history, preset, evaluation=evaluation)
        options = self.query_one("#tips-list", OptionList)
        options.clear_options()
        if self.tips:
            options.add_options([Option(Text(tip.title), id=str(i)) for i, tip in enumerate(self.tips)])
            options.highlighted = 0
        else:
            note = "no tips: the rules found nothing to change" if history else \
                "no metrics yet: run a job first, or open a run in the Runs tab (Enter)"
            options.add_option(Option(Text(note, style="dim"), id="none", disabled=True))
        self._show_detail(0 if self.tips else None)
        targets = check_targets(history, preset, evaluation)
        self.query_one("#targets", Static).update(
            Text("\n").join([Text("Guide targets", style="bold"), *map(format_target, targets)]))

    @property
    def selected(self) -> Tip | None:
        index = self.query_one("#tips-list", OptionList).highlighted
        return self.tips[index] if self.tips and index is not None and index < len(self.tips) else None

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self._show_detail(event.option_index if self.tips else None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if self.tips:
            self.post_message(self.Chosen(self.tips[event.option_index]))

    def _show_detail(self, index: int | None) -> None:
        detail = self.query_one("#tip-detail", Static)
        if index is None or index >= len(self.tips):
            detail.update("")
            return
        tip = self.tips[index]
        detail.update(Text.assemble(("observed: ", "bold"), tip.observed, "\n", ("fix: ", "bold"), tip.fix, "\n",
                                    ("why: ", "bold"), tip.why))
