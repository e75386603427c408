"""The workbench app: what is app-wide only. The current preset (and the unsaved drafts of others), the one job
(``controllers.job_controller.JobController``: start, attach, stop, detach), quit, the command palette, help
and notifications. Each tab is a widget with its own keys and messages (``widgets/``); the main screen
(``main_screen.py``) lays them out and carries the job's news to them. The UI thread never does tensor work.
"""

from __future__ import annotations

import asyncio
from functools import partialmethod
from typing import Callable, Iterable

from textual import on
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.widgets import Input, TextArea
from textual.worker import Worker

from engine.errors import WorkbenchError
from engine.presets import Preset, builtin_names, load
from engine.runs.run_dir import latest_run
from workbench.app.app_state import write_last_preset
from workbench.app.controllers.job_controller import JobController
from workbench.app.gpu_probe import GpuProbe
from workbench.app.key_map import APP_BINDINGS, HELP_NOTES, SHARED_KEYS, elsewhere_text, help_rows, palette_commands
from workbench.app.main_screen import MainScreen
from workbench.app.metric_buffers import MetricBuffers
from workbench.app.run_warnings import RunWarnings
from workbench.app.widgets.dialogs import ConfirmDialog, HelpDialog
from workbench.app.widgets.preset_editor import PresetEditor
from workbench.app.widgets.preset_list import PresetList
from workbench.app.widgets.presets_tab import PresetsTab
from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.samples_view import SamplesScreen
from workbench.app.widgets.sweeps_panel import SweepsPanel
from workbench.app.widgets.tips_panel import TipsPanel

MAIN_SCREEN_WAIT_S = 30.0   # how long the app waits for its main screen's first layout
class WorkbenchApp(App[int]):
    TITLE = "vlr-workbench"
    CSS_PATH = "app.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = APP_BINDINGS

    def __init__(self, preset: Preset, data: str | None = None, *,
                 probe_factory: Callable[[], GpuProbe] = GpuProbe, cursor_blink: bool = True,
                 remember: bool = True, detached: bool = True, storage: str | None = None) -> None:
        super().__init__()
        self.saved = preset
        self.preset = preset
        self.data, self.storage = data, storage    # the dataset root; an RDB URL whose studies the Sweeps tab lists
        self.probe_factory = probe_factory
        self.cursor_blink = cursor_blink
        self.remember = remember
        self.drafts: dict[str, Preset] = {}
        self.buffers = MetricBuffers()
        self.jobs = JobController(self, detached)
        self.run_warnings = RunWarnings(self)

    # ------------------------------------------------------------ the app-wide state
    @property
    def dirty(self) -> bool:
        return self.preset != self.saved

    @property
    def is_builtin(self) -> bool:
        return self.preset.name in builtin_names()

    @property
    def main(self) -> MainScreen:
        """The main screen (also while a dialog is on top of it)."""
        return self.screen_stack[0]

    def main_widget_ready(self) -> bool:
        """Whether the main screen exists and has been filled (not before, nor once the app closes)."""
        return bool(self.screen_stack) and isinstance(self.screen_stack[0], MainScreen) \
            and self.screen_stack[0].filled.is_set() and self.screen_stack[0].is_attached

    def get_default_screen(self) -> Screen:
        return MainScreen(self.buffers, self.probe_factory)

    async def on_mount(self) -> None:
        """The app is ready (keys, tests, a browser tab) only once the main screen shows the preset."""
        self.run_warnings.install()
        try:
            await asyncio.wait_for(self.main.filled.wait(), MAIN_SCREEN_WAIT_S)
        except TimeoutError:
            pass                        # never laid out (no terminal size): the screen fills when it is

    async def main_screen_mounted(self) -> None:
        """Called by ``MainScreen`` once it has a size: show the preset."""
        self.main.query_one("#field-input").cursor_blink = self.cursor_blink
        await self.show_preset(self.preset, self.saved)
        self.main.query_one(PresetList).focus()
        self.jobs.reattach(self.main.query_one(RunHistory).rows)
        self.call_after_refresh(self.main.update_status)      # once the screen counts as filled

    async def show_preset(self, preset: Preset, saved: Preset) -> None:
        self.preset, self.saved = preset, saved
        await self.main.show_preset(preset, saved)
        self.refresh_state()

    def refresh_state(self) -> None:
        self.sub_title = self.preset.name + (" (unsaved)" if self.dirty else "")
        self.refresh_bindings()
        if self.main_widget_ready():
            self.main.update_status()

    def hint(self) -> str:
        """The status line's hint: the job's keys, else the preset's."""
        if self.jobs.hint():
            return self.jobs.hint()
        if self.is_builtin:
            return "built-in: ctrl+s off, a = save as"
        return "unsaved changes: ctrl+s saves" if self.dirty else ""

    # ------------------------------------------------------------ presets (the tabs' messages)
    def action_select_preset(self, number: int) -> None:
        presets = self.main.query_one(PresetList)
        if number - 1 >= len(presets.names):
            self.notify(f"there is no preset {number} (the list has {len(presets.names)})", severity="warning")
            return
        presets.index = number - 1

    @on(PresetList.Chosen)
    async def choose_preset(self, message: PresetList.Chosen) -> None:
        await self.open_preset(message.name)

    async def open_preset(self, name: str) -> None:
        if name == self.preset.name:
            return
        try:
            saved = load(name)
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot open the preset", severity="error", timeout=10)
            return
        if self.dirty:
            self.drafts[self.preset.name] = self.preset
        await self.show_preset(self.drafts.pop(name, saved), saved)
        if self.remember:
            write_last_preset(name)

    @on(PresetEditor.Edited)
    def take_edit(self, message: PresetEditor.Edited) -> None:
        self.preset = message.preset
        self.refresh_state()

    @on(PresetsTab.Saved)
    async def preset_saved(self, message: PresetsTab.Saved) -> None:
        if message.new:
            self.drafts.pop(self.preset.name, None)
            saved = load(message.name)
            await self.show_preset(saved, saved)
            if self.remember:
                write_last_preset(message.name)
            self.notify(f"saved as {message.name} ({saved.source})")
            return
        self.saved = self.preset = load(self.preset.name)
        self.main.show_in_editor(self.preset, self.saved)
        self.notify(f"saved {message.path}")
        self.refresh_state()

    @on(SweepsPanel.PresetSaved)
    async def sweep_preset_saved(self, message: SweepsPanel.PresetSaved) -> None:
        await self.main.query_one(PresetList).reload(self.preset.name)

    @on(TipsPanel.Applied)
    def tip_applied(self, message: TipsPanel.Applied) -> None:
        self.preset = message.preset
        self.main.show_in_editor(self.preset, self.saved)
        self.notify(f"tip applied: {message.changes} change(s), unsaved (ctrl+s or a to save)")
        self.refresh_state()

    # ------------------------------------------------------------ the job (the controller does the work)
    def why_disabled(self, action: str) -> str:
        """Why an app-wide key cannot act now ('' when it can)."""
        return self.jobs.why_not(action)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next_tab":     # a text field or a dialog takes [ and ] as they are
            return self.screen is self.main and not isinstance(self.focused, (Input, TextArea))
        return None if self.why_disabled(action) else True

    def start_job(self, key: str) -> None:
        self.jobs.start(key, self.preset, self.data, self.dirty)
        self.refresh_state()

    action_train = partialmethod(start_job, "train")
    action_finetune = partialmethod(start_job, "finetune")
    action_evaluate = partialmethod(start_job, "evaluate")
    action_pipeline = partialmethod(start_job, "pipeline")

    def action_stop(self) -> None:
        self.push_screen(ConfirmDialog(self.jobs.handle.stop_question(), "Stop"),
                         lambda yes: self.jobs.request_stop() if yes else None)

    def action_detach(self) -> None:
        self.jobs.detach()
        self.refresh_state()

    def action_toggle_detached(self) -> None:
        self.notify(self.jobs.toggle_detached())
        self.refresh_state()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one handler of workers' ends: the job's ends the job (its news then say so)."""
        self.jobs.worker_changed(event)

    def action_samples(self) -> None:
        run = latest_run(self.preset.runtime.runs_dir, self.preset.name, "train-dsr", require="samples")
        screen = SamplesScreen(run) if run is not None else None
        if screen is None or not screen.strips:
            self.notify(f"no run of {self.preset.name} with sample strips yet: train DSR (t), or v on a run in "
                        "the Runs tab", severity="warning")
            return
        self.push_screen(screen)

    # ------------------------------------------------------------ quit
    async def action_quit(self) -> None:
        if self.jobs.running and not self.jobs.following:
            question = f"{self.jobs.kind} is running. Stop it (it saves a resumable checkpoint) and quit?"
            self.push_screen(ConfirmDialog(question, "Stop and quit"), self._quit_after_stop)
            return
        unsaved = sorted({*self.drafts, *([self.preset.name] if self.dirty else [])})
        own_process = self.jobs.following and self.jobs.handle.process is not None
        if not unsaved and not own_process:
            self.exit(0, message=self.jobs.let_go())
            return
        parts = [f"Unsaved changes to {', '.join(unsaved)} will be lost (n, then ctrl+s saves or a saves as)."] \
            if unsaved else []
        parts.append(self.jobs.leaving_question())
        verb = "Quit without saving" if unsaved else "Quit, leave it running"
        self.push_screen(ConfirmDialog(" ".join(p for p in parts if p) + " Quit anyway?", verb),
                         lambda yes: self.exit(0, message=self.jobs.let_go()) if yes else None)

    def _quit_after_stop(self, yes: bool | None) -> None:
        if yes:
            self.jobs.quit_when_idle = True
            self.jobs.request_stop()
            self.notify("quitting once the job has saved its checkpoint")

    async def on_unmount(self) -> None:
        self.run_warnings.remove()
        await self.jobs.wait_on_unmount()

    # ------------------------------------------------------------ keys that cannot act, tabs, help, palette
    async def run_action(self, action, default_namespace=None, namespaces=None) -> bool:
        """A key that cannot act now (of the app or of a tab) says why instead of doing nothing."""
        target = default_namespace if default_namespace is not None else self
        shared_key = SHARED_KEYS.get(action) if target is self else None     # x, v: the shown tab's first
        if shared_key and await self._shown_tab_takes(shared_key):
            return True
        if isinstance(action, str) and hasattr(target, "why_disabled"):
            reason = target.why_disabled(action.partition("(")[0])
            if reason:
                self.notify(reason, severity="warning")
                return True
        return await super().run_action(action, default_namespace, namespaces)

    def action_help_quit(self) -> None:
        """ctrl+c (Textual's reflex guard): how to quit, as plain text."""
        self.notify("q quits the app (ctrl+q too); ctrl+c copies in a text field", title="Do you want to quit?")

    def notify(self, message: str, *, title: str = "", severity="information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Toasts show their text as it is: '[' and ']' in a message are not markup."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    async def action_elsewhere(self, key: str) -> None:
        """A tab's key the focused widget did not take: the shown tab's action when it has the key (nothing has
        focus), else where the key acts."""
        if not await self._shown_tab_takes(key):
            self.notify(elsewhere_text(key), severity="warning")

    async def _shown_tab_takes(self, key: str) -> bool:
        """Run the shown tab's binding of ``key`` (True), if it has one."""
        widget = self.main.tab_widget(self.main.active_tab) if self.screen is self.main else None
        binding = next((b for b in (widget.BINDINGS if widget is not None else ())
                        if key in b.key.split(",")), None)
        if binding is not None:
            await self.run_action(binding.action, widget)
        return binding is not None

    def action_next_tab(self, step: int) -> None:
        if self.screen is self.main:
            self.main.next_tab(step)

    def action_help(self) -> None:
        self.push_screen(HelpDialog(help_rows(self), HELP_NOTES))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if self.main_widget_ready():
            yield from palette_commands(self)

    async def _palette_action(self, tab: str, widget, action: str) -> None:
        """A key's action from the palette: its tab is shown first, then the action runs as its key would."""
        if tab:
            self.main.show_tab(tab)
        await self.run_action(action, widget)
