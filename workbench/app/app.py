"""The workbench app: layout, keys, presets, results, tips, run history and the command palette.

Jobs (thread worker, events, stop, quit) are in ``workbench.app.job_control``; each panel is a
widget in ``workbench.app.widgets``. The UI thread never does tensor work.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from rich.text import Text
from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, RichLog, Static, TabbedContent

from engine.errors import WorkbenchError
from engine.jobs.registry import app_jobs
from engine.presets import Preset, builtin_names, derive, load, save
from engine.runs.status import run_state
from engine.runs.run_dir import latest_run
from engine.runs.records import read_metrics, stage_dirs
from engine.tips import apply_tip, tip_changes
from workbench.app.app_state import write_last_preset
from workbench.app.attach_control import AttachControl
from workbench.app.eval_results import load_evaluation
from workbench.app.job_control import JobControl
from workbench.app.main_screen import MainScreen
from workbench.app.metric_buffers import MetricBuffers
from workbench.app.sweep_control import SweepControl
from workbench.app.preset_reference import base_preset
from workbench.app.gpu_probe import GpuProbe
from workbench.app.widgets.charts import ChartsPanel
from workbench.app.widgets.dialogs import HelpDialog, SaveAsDialog, TipDiffDialog
from workbench.app.widgets.eval_table import EvalTable
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.preset_editor import PresetEditor
from workbench.app.widgets.preset_list import PresetList
from workbench.app.widgets.run_history import RunHistory, run_label
from workbench.app.widgets.samples_view import SamplesScreen
from workbench.app.widgets.sweeps_panel import SweepsPanel
from workbench.app.widgets.tips_panel import TipsPanel
from workbench.app.widgets.vram_gauge import VramGauge

MAIN_SCREEN_WAIT_S = 30.0   # how long the app waits for its main screen's first layout
TABS = ("tab-presets", "tab-charts", "tab-results", "tab-runs", "tab-sweeps", "tab-tips", "tab-log")
RUNS_KEYS = {"attach": "a attaches to a running run", "toggle_mark": "space marks runs",
             "diff": "d compares two marked runs"}
HELP_NOTES = (
    "Presets tab: arrows pick a field, Enter edits it (validated as you type), Esc goes back. "
    "● marks unsaved changes, bold values differ from the built-in. [ and ] switch tabs; "
    "ctrl+p opens the command palette. Runs tab: Enter opens a run (its curves and evaluation), space marks "
    "runs, c overlays the marked runs (o clears them), d compares two, w writes their metrics as CSV, S or a "
    "header click sorts; the tab shows new runs and changes by itself, and columns that do not fit the width "
    "appear in the line under the table for the highlighted run; "
    "v shows the sample faces of a run, a attaches to a running run (started anywhere: headless, torchrun, "
    "another app): its progress, charts and log fill here, x stops it (it saves last.pt), D detaches and q leaves "
    "it running. t f p start the job in its own process (it outlives the app, a dropped SSH session and a "
    "closed browser tab) and follow it like an attached run; B switches to jobs inside "
    "the app and back. Sweeps tab: the studies of the runs directory and the chosen one's trials live (Enter "
    "opens a trial's run); n starts a sweep of the selected preset in its own process, x stops it (trials keep "
    "their checkpoints), b saves the best trial's preset, a attaches to a trial. "
    "In a browser: vlr-workbench serve (runs stay on disk).")


class WorkbenchApp(SweepControl, AttachControl, JobControl, App[int]):
    TITLE = "vlr-workbench"
    CSS_PATH = "app.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("t", "train", "Train", id="job.train", tooltip="train DSR super-resolution"),
        Binding("f", "finetune", "Tune", id="job.finetune", tooltip="fine-tune EdgeFace on DSR outputs"),
        Binding("e", "evaluate", "Eval", id="job.evaluate", tooltip="evaluate the latest checkpoints"),
        Binding("p", "pipeline", "Pipe", id="job.pipeline", tooltip="DSR -> fine-tune -> evaluate"),
        # on the Sweeps tab x stops the sweep; elsewhere the key goes on to the job's stop
        Binding("x", "sweeps_key('stop')", "Stop sweep", id="sweeps.stop",
                tooltip="on the Sweeps tab: stop the shown study's controller (trials keep their checkpoints)"),
        Binding("x", "stop", "Stop", id="job.stop", tooltip="stop the job (asks first; leaves a resumable checkpoint)"),
        Binding("D", "detach", "Detach", show=False, id="job.detach",
                tooltip="stop following the attached run; it keeps running (a on the Runs tab attaches again)"),
        Binding("B", "toggle_detached", "Own-process jobs", show=False, id="job.detached_start",
                tooltip="t f p: the job in its own process (the default; it outlives the app) or inside the app"),
        Binding("ctrl+s", "save", "Save", id="preset.save", tooltip="save the preset (your presets only)"),
        Binding("a", "save_as", "Save as", id="preset.save_as",
                tooltip="save the preset under a new name (on the Runs tab a attaches)"),
        # the Runs tab's keys, whatever has focus on that tab (its table, a filter, the tab bar)
        Binding("a", "runs_key('attach')", "Attach", id="runs.tab_attach",
                tooltip="on the Runs tab: follow the highlighted running run (x stops it, D detaches)"),
        Binding("space", "runs_key('toggle_mark')", "Mark", show=False, id="runs.tab_mark",
                tooltip="on the Runs tab: mark or unmark the highlighted run"),
        Binding("d", "runs_key('diff')", "Diff two", show=False, id="runs.tab_diff",
                tooltip="on the Runs tab: preset diff and metric deltas of two marked runs"),
        # the Sweeps tab's keys (a attaches to a trial there)
        Binding("n", "sweeps_key('new')", "New sweep", show=False, id="sweeps.new",
                tooltip="on the Sweeps tab: start a sweep of the selected preset (in its own process)"),
        Binding("b", "sweeps_key('save_best')", "Save best", show=False, id="sweeps.save_best",
                tooltip="on the Sweeps tab: save the best trial's preset under a new name"),
        Binding("a", "sweeps_key('attach')", "Attach trial", id="sweeps.attach",
                tooltip="on the Sweeps tab: follow the highlighted trial's run"),
        Binding("y", "apply_tip", "Apply tip", show=False, id="tips.apply"),
        Binding("l", "toggle_log_y", "Log-y charts", show=False, id="charts.log_y"),
        Binding("s", "smoothing", "Chart smoothing", show=False, id="charts.smoothing"),
        Binding("o", "clear_overlay", "Clear overlay", show=False, id="charts.clear_overlay"),
        Binding("v", "samples", "Samples", show=False, id="runs.samples",
                tooltip="sample faces (VLR | bicubic | SR | HR) of the highlighted run, else the latest DSR run"),
        Binding("right_square_bracket", "next_tab(1)", "Next tab", show=False, key_display="]", id="tabs.next"),
        Binding("left_square_bracket", "next_tab(-1)", "Previous tab", show=False, key_display="[",
                id="tabs.previous"),
        Binding("question_mark", "help", "Help", key_display="?", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="quit (asks first while a job runs)"),
        *(Binding(str(n), f"select_preset({n})", f"Preset {n}", show=False, id=f"preset.select_{n}")
          for n in range(1, 10)),
    ]

    def __init__(self, preset: Preset, data: str | None = None, *,
                 probe_factory: Callable[[], GpuProbe] = GpuProbe, cursor_blink: bool = True,
                 remember: bool = True, detached: bool = True) -> None:
        super().__init__()
        self.detached_start = detached       # t f p: the job in its own process (True) or in a thread of the app
        self.detached_jobs: list = []        # processes this app started (kept to reap them)
        self.saved = preset
        self.preset = preset
        self.data = data
        self.probe_factory = probe_factory
        self.cursor_blink = cursor_blink
        self.remember = remember
        self.drafts: dict[str, Preset] = {}
        self.buffers = MetricBuffers()
        self.records: deque[dict[str, Any]] = deque(maxlen=20000)
        self.evaluation: dict | None = None
        self.tips_run: Path | None = None     # tips of a run opened from the Runs tab (None: the current job)

    def get_default_screen(self) -> Screen:
        return MainScreen(self.buffers, self.probe_factory)

    async def on_mount(self) -> None:
        """The app is ready (keys, tests, a browser tab) only once the main screen shows the preset."""
        screen = self.screen_stack[0]
        if isinstance(screen, MainScreen):
            try:
                await asyncio.wait_for(screen.filled.wait(), MAIN_SCREEN_WAIT_S)
            except TimeoutError:
                pass                        # never laid out (no terminal size): the screen fills when it is

    async def main_screen_mounted(self) -> None:
        """Called by ``MainScreen`` once its widgets exist: show the preset and start the status timer."""
        self.main_widget("#field-input").cursor_blink = self.cursor_blink
        await self._show_preset(self.preset, self.saved)
        self.main_widget(PresetList).focus()

    async def _show_preset(self, preset: Preset, saved: Preset) -> None:
        self.preset, self.saved = preset, saved
        base, label = base_preset(saved)
        self.sub_title = preset.name
        self.main_widget(PresetEditor).show(preset, saved, base, label)
        await self.main_widget(PresetList).reload(preset.name)
        self.main_widget(RunHistory).reload(preset.runtime.runs_dir, preset)
        self.main_widget(SweepsPanel).watch_runs(preset.runtime.runs_dir)
        self._show_latest_evaluation(preset)
        self._update_tips()
        self._refresh_state()

    def main_widget(self, selector, expect_type=None):
        """A widget of the main screen, found also while a dialog is on top of it."""
        screen = self.screen_stack[0] if self.screen_stack else self.screen
        return screen.query_one(selector, expect_type) if expect_type else screen.query_one(selector)

    def main_widget_ready(self) -> bool:
        """Whether the main screen's widgets exist (not before compose, nor while the app closes)."""
        screen = self.screen_stack[0] if self.screen_stack else None
        try:      # query_one by id is cached by Textual (a query() walked every widget: 1,500x slower per call)
            return screen is not None and screen.query_one("#statusline") is not None
        except NoMatches:
            return False

    # ------------------------------------------------------------ state & hints
    @property
    def dirty(self) -> bool:
        return self.preset != self.saved

    @property
    def is_builtin(self) -> bool:
        return self.preset.name in builtin_names()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save_as" and (self.runs_tab_shown() or self.sweeps_tab_shown()):
            return False         # a attaches there (the next binding of a): hidden, and the key goes on
        if action == "sweeps_key" and parameters in (("stop",), ("attach",)) and not self.sweeps_tab_shown():
            return False         # x and a go on to the job's stop, save-as or the Runs tab's attach
        if action == "runs_key" and parameters == ("attach",) and not self.runs_tab_shown():
            return False
        return None if self.why_disabled(action) else True

    def runs_tab_shown(self) -> bool:
        """Whether the main screen is on top and shows the Runs tab."""
        return (self.main_widget_ready() and self.screen is self.screen_stack[0]
                and self.main_widget(TabbedContent).active == "tab-runs")

    def why_disabled(self, action: str) -> str:
        """Why ``action`` cannot run now ('' when it can)."""
        if action in app_jobs() and self.following:
            return f"attached to {self.job_kind}: D detaches (it keeps running) or x stops it"
        if action in app_jobs() and self.job_running:
            return f"{self.job_kind} is running: wait for it or stop it with x"
        if action == "attach" and self.following:
            return f"already attached to {self.attached.name}: D detaches first"
        if action == "attach" and self.job_running:
            return f"{self.job_kind} is running in the app: wait for it or stop it with x"
        if action == "detach" and not self.following:
            return "not attached to a run (a on the Runs tab attaches to a running one)"
        if action == "stop" and not self.job_running:
            return "no job is running"
        if action == "stop" and self.job.stopping:
            return "the job is already stopping"
        if action == "save" and self.is_builtin:
            return "built-in presets are read-only: a saves a copy"
        if action == "save" and not self.dirty:
            return "no unsaved changes"
        if action == "apply_tip" and (not self.is_mounted or self.main_widget(TipsPanel).selected is None):
            return "no tip to apply (see the Tips tab)"
        if action == "clear_overlay" and not (self.main_widget_ready() and self.main_widget(ChartsPanel).overlays):
            return ("nothing is overlaid, so o has nothing to clear: Enter on a run in the Runs tab overlays its "
                    "curves on the charts, space marks runs and c overlays the marked ones")
        return ""

    def _hint(self) -> str:
        hints = []
        if self.following:
            hints.append("attached: x stops it · D detaches · q leaves it running")
        elif self.job_running:
            hints.append("t f e p wait for this job · x stops it")
        elif self.is_builtin:
            hints.append("built-in: ctrl+s off, a = save as")
        elif self.dirty:
            hints.append("unsaved changes: ctrl+s saves")
        return " · ".join(hints)

    @on(VramGauge.Changed)
    def _update_status(self) -> None:
        """The status line (narrow terminals): on job events, key state changes and new GPU readings."""
        if not self.main_widget_ready():
            return
        parts = [self.main_widget(JobPanel).status_line(), self.main_widget(VramGauge).status_text(), self._hint()]
        text, line = " · ".join(p for p in parts if p), self.main_widget("#statusline", Static)
        if text != line.content:      # redrawn only when it changed (the UI stays idle beside a job)
            line.update(text, layout=False)   # one line, its size fixed

    def _refresh_state(self) -> None:
        self.sub_title = self.preset.name + (" (unsaved)" if self.dirty else "")
        self.refresh_bindings()
        self._update_status()

    def _log(self, text: str, style: str = "") -> None:
        """A line in the Log tab (dropped once the app is closing: the run directories keep the jobs' own logs)."""
        if self.main_widget_ready():
            self.main_widget("#log", RichLog).write(Text(text, style=style))

    # ----------------------------------------------------------------- presets
    def action_select_preset(self, number: int) -> None:
        presets = self.main_widget(PresetList)
        if number - 1 >= len(presets.names):
            self.notify(f"there is no preset {number} (the list has {len(presets.names)})", severity="warning")
            return
        presets.index = number - 1

    @on(PresetList.Chosen)
    async def choose_preset(self, message: PresetList.Chosen) -> None:
        if message.name == self.preset.name:
            return
        try:
            saved = load(message.name)
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot open the preset", severity="error", timeout=10)
            return
        if self.dirty:
            self.drafts[self.preset.name] = self.preset
        await self._show_preset(self.drafts.pop(message.name, saved), saved)
        if self.remember:
            write_last_preset(message.name)

    @on(PresetEditor.Edited)
    def take_edit(self, message: PresetEditor.Edited) -> None:
        self.preset = message.preset
        self._refresh_state()

    def action_save(self) -> None:
        try:
            path = save(self.preset, self.preset.name, overwrite=True)
        except WorkbenchError as exc:
            self.notify(str(exc), title="not saved", severity="error", timeout=10)
            return
        self.saved = self.preset = load(self.preset.name)
        base, label = base_preset(self.saved)
        self.main_widget(PresetEditor).show(self.preset, self.saved, base, label)
        self.notify(f"saved {path}")
        self._refresh_state()

    def action_save_as(self) -> None:
        name = self.preset.name
        suggestion = f"my-{name}" if self.is_builtin else f"{name}-copy"
        self.push_screen(SaveAsDialog(suggestion, self._save_copy, self.cursor_blink), self._saved_as)

    def _save_copy(self, name: str) -> str | None:
        """Save the current preset as ``name``; the error message, or None when saved."""
        try:
            save(derive(self.preset, name), name)
        except WorkbenchError as exc:
            return str(exc)
        return None

    async def _saved_as(self, name: str | None) -> None:
        if not name:
            return
        self.drafts.pop(self.preset.name, None)
        saved = load(name)
        await self._show_preset(saved, saved)
        if self.remember:
            write_last_preset(name)
        self.notify(f"saved as {name} ({saved.source})")

    # ----------------------------------------------------------------- results
    def _show_evaluation(self, run_dir: Path, switch: bool = True) -> bool:
        try:
            evaluation = load_evaluation(run_dir)
        except WorkbenchError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return False
        if evaluation is None:
            return False
        self.evaluation = evaluation
        self.main_widget(EvalTable).show(evaluation, f"{Path(run_dir).name}/eval.json")
        if switch:
            self.main_widget(TabbedContent).active = "tab-results"
        return True

    def _show_latest_evaluation(self, preset: Preset) -> None:
        """The Results tab after a start or a preset switch: the preset's newest eval.json, if any."""
        run = latest_run(preset.runtime.runs_dir, preset.name, "evaluate", require="eval.json")
        if run is not None and self._show_evaluation(run, switch=False):
            return
        self.evaluation = None
        table = self.main_widget(EvalTable)
        table.query_one("#eval-rows", DataTable).clear()
        table.query_one("#eval-source", Static).update(
            f"no evaluation of {preset.name} yet: press e (uses the latest checkpoints of this preset)")

    @staticmethod
    def _run_records(path: Path) -> list[dict[str, Any]]:
        """metrics.jsonl of a run and, for a pipeline, of its stage runs."""
        return [record for folder in (path, *stage_dirs(path)) for record in read_metrics(folder)]

    @on(RunHistory.Opened)
    def open_run(self, message: RunHistory.Opened) -> None:
        self.open_run_dir(message.path)

    def open_run_dir(self, path: Path) -> None:
        """A past run's curves overlaid on the charts, its evaluation in Results and its tips in Tips."""
        overlay = MetricBuffers()
        records = self._run_records(path)
        overlay.add_records(records)
        row = self.main_widget(RunHistory).row_for(path)
        label = run_label(row) if row else path.name
        self.main_widget(ChartsPanel).set_overlays([(label, overlay)] if overlay else [])
        shown_eval = any(self._show_evaluation(folder) for folder in (path, *stage_dirs(path))
                         if (folder / "eval.json").is_file())
        if overlay and not shown_eval:
            self.main_widget(TabbedContent).active = "tab-charts"
        self.tips_run = path
        self._update_tips()
        self._log(f"opened run {path} ({'curves overlaid' if overlay else 'no metrics'}; its tips are in "
                  "the Tips tab)")

    @on(RunHistory.Compared)
    def compare_runs(self, message: RunHistory.Compared) -> None:
        overlays = []
        for path, label in zip(message.paths, message.labels):
            buffers = MetricBuffers()
            buffers.add_records(self._run_records(path))
            if buffers:
                overlays.append((label, buffers))
        if not overlays:
            self.notify("the marked runs have no metrics to draw", severity="warning")
            return
        self.main_widget(ChartsPanel).set_overlays(overlays)
        self.main_widget(TabbedContent).active = "tab-charts"
        self.notify(f"overlaid {len(overlays)} run(s): {', '.join(label for label, _ in overlays)} (o clears)")

    def samples_run(self) -> Path | None:
        """The run whose samples ``v`` shows: the Runs tab's highlighted run, else the newest DSR run of the
        preset with sample strips."""
        if self.main_widget(TabbedContent).active == "tab-runs":
            highlighted = self.main_widget(RunHistory).highlighted
            if highlighted is not None:
                return highlighted
        runs_dir = self.preset.runtime.runs_dir
        return latest_run(runs_dir, self.preset.name, "train-dsr", require="samples")

    def action_samples(self) -> None:
        run = self.samples_run()
        if run is None:
            self.notify(f"no run of {self.preset.name} with sample strips yet: train DSR (t), or pick a run in "
                        "the Runs tab", severity="warning")
            return
        screen = SamplesScreen(run)
        if not screen.strips:
            self.notify(f"{run.name} has no sample strips (train-dsr writes samples/epoch_NNN.png)",
                        severity="warning")
            return
        self.push_screen(screen)

    def action_clear_overlay(self) -> None:
        charts = self.main_widget(ChartsPanel)
        count = len(charts.overlays)
        charts.set_overlays([])
        self.notify(f"cleared {count} overlaid run(s): the charts show the current job only")
        self.refresh_bindings()

    def action_toggle_log_y(self) -> None:
        on_ = self.main_widget(ChartsPanel).toggle_log_y()
        self.notify(f"log-y {'on' if on_ else 'off'} (loss charts)")

    def action_smoothing(self) -> None:
        weight = self.main_widget(ChartsPanel).cycle_smoothing()
        self.notify(f"smoothing {weight:g}" if weight else "smoothing off")

    # -------------------------------------------------------------------- tips
    def _update_tips(self) -> None:
        """Tips of the run opened in the Runs tab, else of the current (or last) job's metrics."""
        history, preset, evaluation, source = list(self.records), self.preset, self.evaluation, "the last job"
        if self.tips_run is not None:
            try:
                preset, tips_path = load(self.tips_run / "preset.toml"), self.tips_run
                history = self._run_records(tips_path)
                evaluation = next((found for found in (load_evaluation(d) for d in (tips_path, *stage_dirs(tips_path)))
                                   if found is not None), None)
                source = f"run {tips_path.name} ({run_state(tips_path)})"
            except WorkbenchError as exc:
                self._log(f"tips of {self.tips_run} unavailable: {exc}", "yellow")
        try:
            self.main_widget(TipsPanel).update_tips(history, preset, evaluation, source)
        except WorkbenchError as exc:
            self._log(f"tips unavailable: {exc}", "yellow")
        self.refresh_bindings()

    # ------------------------------------------------------ keys that cannot act
    async def run_action(self, action, default_namespace=None, namespaces=None) -> bool:
        """A key of the app that cannot act now says why (the footer shows it dimmed) instead of doing nothing."""
        if isinstance(action, str) and (default_namespace is None or default_namespace is self):
            reason = self.why_disabled(action.split("(", 1)[0])
            if reason:
                self.notify(reason, severity="warning")
                return True
        return await super().run_action(action, default_namespace, namespaces)

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Toasts show their text as it is: '[' and ']' in a message are not markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def action_apply_tip(self) -> None:
        tip = self.main_widget(TipsPanel).selected
        if tip is not None:
            self._offer_tip(tip)

    @on(TipsPanel.Chosen)
    def choose_tip(self, message: TipsPanel.Chosen) -> None:
        self._offer_tip(message.tip)

    def _offer_tip(self, tip: Any) -> None:
        try:
            changes = tip_changes(self.preset, tip)
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot apply the tip", severity="error", timeout=10)
            return
        if not changes:
            self.notify("the preset already has this tip's values")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.preset = apply_tip(self.preset, tip)
                base, label = base_preset(self.saved)
                self.main_widget(PresetEditor).show(self.preset, self.saved, base, label)
                self.notify(f"tip applied: {len(changes)} change(s), unsaved (ctrl+s or a to save)")
                self._refresh_state()
        self.push_screen(TipDiffDialog(tip.title, changes), answer)

    # --------------------------------------------------------- navigation, help
    def action_next_tab(self, step: int) -> None:
        tabs = self.main_widget(TabbedContent)
        tabs.active = TABS[(TABS.index(tabs.active) + step) % len(TABS)]

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """The Runs tab takes the keyboard to its table (arrows, Enter), unless focus is already in it."""
        if event.pane is not None and event.pane.id == "tab-charts":
            self.main_widget(ChartsPanel).call_after_refresh(self.main_widget(ChartsPanel).flush)   # hidden: skipped
        if event.pane is not None and event.pane.id == "tab-sweeps":
            self.main_widget("#sweeps-table", DataTable).focus()
        if event.pane is not None and event.pane.id == "tab-runs":
            history = self.main_widget(RunHistory)
            if self.focused is None or history not in self.focused.ancestors_with_self:
                history.query_one("#runs-table", DataTable).focus()
        self.refresh_bindings()          # a: save as, or attach on the Runs tab

    def action_runs_key(self, name: str) -> None:
        """a / space / d of the Runs tab, whatever has focus on that tab; elsewhere they say where they act."""
        if not self.runs_tab_shown():
            self.notify(f"{RUNS_KEYS[name]} on the Runs tab (] switches tabs)", severity="warning")
            return
        getattr(self.main_widget(RunHistory), f"action_{name}")()

    def action_help(self) -> None:
        rows = [(b.key_display or b.key, b.tooltip or b.description) for b in self.BINDINGS
                if isinstance(b, Binding) and not b.key.isdigit()]
        rows.insert(0, ("1-9", "switch to preset 1-9 of the list (arrows also switch)"))
        self.push_screen(HelpDialog(rows, HELP_NOTES))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.id and not binding.key.isdigit() \
                    and not binding.action.startswith(("runs_key", "sweeps_key")):   # the tabs' own keys
                key = binding.key_display or binding.key
                title = f"{binding.description} ({key})" + (f": {binding.tooltip}" if binding.tooltip else "")
                yield SystemCommand(title, f"key {key}",
                                    partial(self._palette_action, binding.action))
        yield SystemCommand("Attach (a on the Runs tab): follow the highlighted running run",
                            "its progress, charts and log; x stops it, D detaches", self.action_attach)
        yield SystemCommand("New sweep (n on the Sweeps tab): tune the selected preset with an Optuna study",
                            "each trial an ordinary run, in its own process", self._palette_new_sweep)
        for tab in TABS:
            yield SystemCommand(f"Show {tab.removeprefix('tab-')}", "switch tab",
                                partial(setattr, self.main_widget(TabbedContent), "active", tab))

    def _palette_new_sweep(self) -> None:
        self.main_widget(TabbedContent).active = "tab-sweeps"
        self.call_after_refresh(self.action_sweeps_key, "new")

    async def _palette_action(self, action: str) -> None:
        """A binding's action from the palette: runs whatever tab is shown (Save as on the Runs tab too)."""
        name, _, arguments = action.partition("(")
        reason = self.why_disabled(name)
        if reason:
            self.notify(reason, severity="warning")
            return
        result = getattr(self, f"action_{name}")(*ast.literal_eval(f"({arguments[:-1]},)" if arguments else "()"))
        if inspect.isawaitable(result):
            await result
