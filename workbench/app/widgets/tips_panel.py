"""The Tips tab: tips (engine.tips) for the current job's metrics or an opened run's, and the guide's targets.

The tab keeps the current job's metric records (from the job's events) and the run opened from the Runs or
Sweeps tab; ``y`` (or Enter) shows the highlighted tip's diff and, once confirmed, posts ``Applied`` with the
patched preset (the App holds the preset)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from engine.errors import WorkbenchError
from engine.presets import Preset, load
from engine.runs.status import run_state
from engine.tips import Target, Tip, apply_tip, check_targets, propose_tips, tip_changes
from workbench.app import messages as msg
from workbench.app.widgets.dialogs import TipDiffDialog

RECORDS_KEPT = 20000     # the current job's metric records the tips read (the newest)


def format_target(target: Target) -> Text:
    def show(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value * 100:.1f}%" if target.unit == "%" else f"{value:.4g}{(' ' + target.unit) if target.unit else ''}"

    mark = ("✓", "green") if target.met else (("·", "dim") if target.value is None else ("✗", "red"))
    return Text.assemble(mark, f" {target.label}: {show(target.value)} (target {target.comparison} "
                               f"{show(target.target)})")


class TipsPanel(Vertical):
    BORDER_TITLE = "Tips"
    BINDINGS = [Binding("y", "apply", "Apply tip", id="tips.apply",
                        tooltip="the highlighted tip's diff, then apply it to the preset (unsaved)")]

    @dataclass
    class Applied(Message):
        """The user applied a tip: ``preset`` is the current preset with its changes (unsaved)."""
        preset: Preset
        changes: int

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tips: list[Tip] = []
        self.source = "the last job"
        self.records: deque[dict[str, Any]] = deque(maxlen=RECORDS_KEPT)   # the current job's metrics
        self.run: Path | None = None        # a run opened from the Runs tab (None: the current job)
        self.run_history: list[dict[str, Any]] = []    # its records and evaluation, as read when it was opened
        self.run_evaluation: dict | None = None

    # ----------------------------------------------------------------- sources
    def follow_job(self) -> None:
        """A new job starts: the tips follow its metrics from now on."""
        self.records.clear()
        self.run = None

    def add_record(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def follow_run(self, path: Path, history: list[dict[str, Any]], evaluation: dict | None) -> None:
        """The tips follow the run ``path`` opened elsewhere (its records and evaluation as the opener read them)."""
        self.run, self.run_history, self.run_evaluation = path, history, evaluation

    def recompute(self, preset: Preset, evaluation: dict | None) -> None:
        """Tips of the opened run, else of the current (or last) job's metrics with ``preset``."""
        history, source = list(self.records), "the last job"
        if self.run is not None:
            try:
                preset, history, evaluation = load(self.run / "preset.toml"), self.run_history, self.run_evaluation
                source = f"run {self.run.name} ({run_state(self.run)})"
            except WorkbenchError as exc:
                self.post_message(msg.LogLine(f"tips of {self.run} unavailable: {exc}", "yellow"))
        try:
            self.update_tips(history, preset, evaluation, source)
        except WorkbenchError as exc:
            self.post_message(msg.LogLine(f"tips unavailable: {exc}", "yellow"))

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
            self.offer(self.tips[event.option_index])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.why_disabled(action) else True

    def why_disabled(self, action: str) -> str:
        return "no tip to apply: the rules found nothing (run a job, or open a run with Enter)" \
            if action == "apply" and self.selected is None else ""

    def action_apply(self) -> None:
        self.offer(self.selected)

    def offer(self, tip: Tip) -> None:
        """The tip's diff against the current preset; applied (unsaved) when the user says yes."""
        preset = self.app.preset
        try:
            changes = tip_changes(preset, tip)
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot apply the tip", severity="error", timeout=10)
            return
        if not changes:
            self.notify("the preset already has this tip's values")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.post_message(self.Applied(apply_tip(preset, tip), len(changes)))
        self.app.push_screen(TipDiffDialog(tip.title, changes), answer)

    def _show_detail(self, index: int | None) -> None:
        detail = self.query_one("#tip-detail", Static)
        if index is None or index >= len(self.tips):
            detail.update("")
            return
        tip = self.tips[index]
        detail.update(Text.assemble(("observed: ", "bold"), tip.observed, "\n", ("fix: ", "bold"), tip.fix, "\n",
                                    ("why: ", "bold"), tip.why))
