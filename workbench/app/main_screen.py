"""The main screen: tabs (Presets, Charts, Results, Runs, Sweeps, Tips, Log), the job/GPU sidebar, the status line.

Data flow one way: the App's preset -> the job controller's handle -> events -> this screen -> its panels. The
screen is where the job's news arrive (``app.jobs.news``) and where one tab's message reaches another (a run
opened on the Runs or Sweeps tab fills Charts, Results and Tips); the tabs never reach into each other. Each
tab widget owns its keys (the footer shows the focused tab's); dialogs and the samples view are screens pushed
on top of this one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, RichLog, Static, TabbedContent, TabPane, Tabs

from engine import events as ev
from engine.errors import WorkbenchError
from engine.presets import Preset
from engine.runs.run_dir import latest_run
from engine.sweep.margins import pipeline_verdict
from workbench.app import messages as msg, run_export
from workbench.app.eval_results import load_evaluation
from workbench.app.gpu_probe import GpuProbe
from workbench.app.metric_buffers import LIVE_SPLIT, MetricBuffers
from workbench.app.preset_reference import base_preset
from workbench.app.run_files import run_evaluation, run_records
from workbench.app.widgets.charts import ChartsPanel
from workbench.app.widgets.eval_table import EvalTable
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.preset_editor import PresetEditor
from workbench.app.widgets.preset_list import PresetList
from workbench.app.widgets.presets_tab import PresetsTab
from workbench.app.widgets.run_history import RunHistory, run_label
from workbench.app.widgets.samples_view import SamplesScreen
from workbench.app.widgets.sweeps_panel import SweepsPanel
from workbench.app.widgets.tips_panel import TipsPanel
from workbench.app.widgets.vram_gauge import VramGauge

LOG_LINES = 5000
ERROR_DETAIL_CHARS = 600   # the job panel shows this much of an error (cut at a word), the log all of it
EVENT_MESSAGES = {ev.Progress: "job_progress", ev.Metrics: "job_metrics", ev.Log: "job_log",
                  ev.Samples: "job_samples", ev.Finished: "job_finished", ev.Failed: "job_failed"}


def fit_status(parts: list[str], width: int) -> str:
    """The status line's parts (job, GPU, hint), joined, within ``width``: the GPU goes first, then the hint,
    and a job line longer than the width ends in an ellipsis."""
    while len(parts) > 1 and len(" · ".join(parts)) > width:
        parts = parts[:1] + parts[2:] if len(parts) > 2 else parts[:1]
    text = " · ".join(parts)
    return text if len(text) <= width or width < 2 else text[:width - 1] + "…"


def error_detail(error: str) -> str:
    """The error's first paragraph for the job panel, cut at a word boundary when very long."""
    text = " ".join((error or "").strip().split("\n\n")[0].split())
    if len(text) <= ERROR_DETAIL_CHARS:
        return text
    return text[:ERROR_DETAIL_CHARS].rsplit(" ", 1)[0] + " … (full text in the Log tab)"
TABS = ("tab-presets", "tab-charts", "tab-results", "tab-runs", "tab-sweeps", "tab-tips", "tab-log")
TAB_FOCUS = {"tab-presets": "#presets", "tab-charts": "#charts", "tab-results": "#eval-rows",
             "tab-runs": "#runs-table", "tab-sweeps": "#sweeps-table", "tab-tips": "#tips-list", "tab-log": "#log"}
TAB_WIDGETS = {"tab-presets": PresetsTab, "tab-charts": ChartsPanel, "tab-runs": RunHistory,
               "tab-sweeps": SweepsPanel, "tab-tips": TipsPanel}   # the tabs with keys of their own


class MainScreen(Screen):
    def __init__(self, buffers: MetricBuffers, probe_factory: Callable[[], GpuProbe]) -> None:
        super().__init__()
        self.buffers = buffers
        self.probe_factory = probe_factory
        self.filled = asyncio.Event()    # the app has filled the panels (it waits for this before it is ready)
        self.evaluation: dict | None = None   # the evaluation shown in Results (the tips read it)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with TabbedContent(id="main", initial="tab-presets"):
                with TabPane("Presets", id="tab-presets"):
                    yield PresetsTab(id="presets-tab")
                with TabPane("Charts", id="tab-charts"):
                    yield ChartsPanel(self.buffers, id="charts")
                with TabPane("Results", id="tab-results"):
                    yield EvalTable(id="results")
                with TabPane("Runs", id="tab-runs"):
                    yield RunHistory(id="runs")
                with TabPane("Sweeps", id="tab-sweeps"):
                    yield SweepsPanel(id="sweeps")
                with TabPane("Tips", id="tab-tips"):
                    yield TipsPanel(id="tips")
                with TabPane("Log", id="tab-log"):
                    yield RichLog(id="log", wrap=True, markup=False, highlight=False, max_lines=LOG_LINES)
            with Vertical(id="sidebar"):
                yield JobPanel(id="job")
                yield VramGauge(self.probe_factory, id="vram")
        yield Static("", id="statusline")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.app.jobs.news = self
        self.query_one(Tabs).can_focus = False     # focus stays in a tab's content: its keys work at once

    async def on_resize(self) -> None:
        """The first time the screen has a size, the app fills the panels (tables laid out at their width)."""
        if not self.filled.is_set():
            try:
                await self.app.main_screen_mounted()
            finally:
                self.filled.set()

    # ------------------------------------------------------------ tabs
    @property
    def active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    def show_tab(self, tab: str) -> None:
        """Show ``tab`` with the keyboard in it (a focused widget left in the hidden tab would take it back)."""
        self.set_focus(None)
        self.query_one(TabbedContent).active = tab
        if tab in TAB_FOCUS:
            self.set_focus(self.query_one(TAB_FOCUS[tab]))

    def next_tab(self, step: int) -> None:
        self.show_tab(TABS[(TABS.index(self.active_tab) + step) % len(TABS)])

    def tab_widget(self, tab: str):
        return self.query_one(TAB_WIDGETS[tab]) if tab in TAB_WIDGETS else None

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """A tab takes the keyboard to its content (unless focus is already in it): its keys act at once."""
        pane = event.pane.id if event.pane is not None else ""
        if pane != self.active_tab:          # a stale activation (the tab was switched again since)
            return
        if pane in TAB_FOCUS and (self.focused is None or event.pane not in self.focused.ancestors_with_self):
            self.query_one(TAB_FOCUS[pane]).focus()
        self.app.refresh_bindings()

    # ------------------------------------------------------------ presets
    async def show_preset(self, preset: Preset, saved: Preset) -> None:
        """Every panel for ``preset`` (a start, a switch, a save as)."""
        self.show_in_editor(preset, saved)
        await self.query_one(PresetList).reload(preset.name)
        self.query_one(RunHistory).reload(preset.runtime.runs_dir, preset)
        self.query_one(SweepsPanel).watch_runs(preset.runtime.runs_dir)
        self.show_latest_evaluation(preset)
        self.update_tips()

    def show_in_editor(self, preset: Preset, saved: Preset) -> None:
        base, label = base_preset(saved)
        self.query_one(PresetEditor).show(preset, saved, base, label)

    # ------------------------------------------------------------ results, runs
    def show_evaluation(self, run_dir: Path, switch: bool = True) -> bool:
        try:
            evaluation = load_evaluation(run_dir)
        except WorkbenchError as exc:
            self.app.notify(str(exc), severity="error", timeout=10)
            return False
        if evaluation is None:
            return False
        self.evaluation = evaluation
        self.query_one(EvalTable).show(evaluation, f"{Path(run_dir).name}/eval.json")
        if switch:
            self.show_tab("tab-results")
        return True

    def show_latest_evaluation(self, preset: Preset) -> None:
        """The Results tab after a start or a preset switch: the preset's newest eval.json, if any."""
        run = latest_run(preset.runtime.runs_dir, preset.name, "evaluate", require="eval.json")
        if run is not None and self.show_evaluation(run, switch=False):
            return
        self.evaluation = None
        table = self.query_one(EvalTable)
        table.query_one("#eval-rows", DataTable).clear()
        table.query_one("#eval-source", Static).update(
            f"no evaluation of {preset.name} yet: press e (uses the latest checkpoints of this preset)")

    @on(msg.RunOpened)
    def open_run(self, message: msg.RunOpened) -> None:
        """A past run's curves overlaid on the charts, its evaluation in Results and its tips in Tips; the screen
        goes to Results when it has an evaluation, else to Charts."""
        path = message.path
        records, overlay = run_records(path), MetricBuffers()        # read once: for the charts and the tips
        overlay.add_records(records)
        row = self.query_one(RunHistory).row_for(path)
        self.query_one(ChartsPanel).set_overlays([(run_label(row) if row else path.name, overlay)] if overlay else [])
        try:
            evaluation, folder = run_evaluation(path)
        except WorkbenchError as exc:
            self.app.notify(str(exc), severity="error", timeout=10)
            evaluation, folder = None, None
        if not (folder is not None and self.show_evaluation(folder)):
            self.show_tab("tab-charts")           # (an empty run too: its charts say there is nothing)
        self.query_one(TipsPanel).follow_run(path, records, evaluation)
        self.update_tips()
        self.log_line(f"opened run {path} ({'curves overlaid' if overlay else 'no metrics'}; its tips are in "
                      "the Tips tab)")

    @on(RunHistory.Compared)
    def compare_runs(self, message: RunHistory.Compared) -> None:
        overlays = []
        for path, label in zip(message.paths, message.labels):
            buffers = MetricBuffers()
            buffers.add_records(run_records(path))
            if buffers:
                overlays.append((label, buffers))
        if not overlays:
            self.app.notify("the marked runs have no metrics to draw", severity="warning")
            return
        self.query_one(ChartsPanel).set_overlays(overlays)
        self.show_tab("tab-charts")
        self.app.notify(f"overlaid {len(overlays)} run(s): {', '.join(label for label, _ in overlays)} (o clears)")

    @on(msg.ExportRequested)
    def export_run(self, message: msg.ExportRequested) -> None:
        """E on the Runs tab: the run's DSR and recogniser to ONNX in RUN/export, in the app's thread."""
        try:
            request = run_export.export_request(message.path)
        except WorkbenchError as exc:
            self.app.notify(str(exc), title="cannot export", severity="error", timeout=10)
            return
        self.app.jobs.run_in_app(request, f"▶ export {message.path.name} to {request.options.out} (ONNX; parity "
                                          "on its test images)")

    @on(msg.AttachRequested)
    def attach(self, message: msg.AttachRequested) -> None:
        self.app.jobs.attach(message.path)

    def update_tips(self) -> None:
        self.query_one(TipsPanel).recompute(self.app.preset, self.evaluation)
        self.app.refresh_bindings()

    # ------------------------------------------------------------ log, status line
    @on(msg.LogLine)
    def _log_message(self, message: msg.LogLine) -> None:
        self.log_line(message.text, message.style)

    def log_line(self, text: str, style: str = "") -> None:
        self.query_one("#log", RichLog).write(Text(text, style=style))

    @on(msg.RunFileWarning)
    def _run_file_warning(self, message: msg.RunFileWarning) -> None:
        self.app.notify(f"{message.text} (damaged parts of {message.run} are left out; the Log tab lists them)",
                        title="damaged run file", severity="warning", timeout=10)

    @on(VramGauge.Changed)
    @on(JobPanel.Changed)
    def update_status(self) -> None:
        """The status line (narrow terminals): on job news, key state changes and new GPU readings."""
        parts = [self.query_one(JobPanel).status_line(), self.query_one(VramGauge).status_text(), self.app.hint()]
        line = self.query_one("#statusline", Static)
        text = fit_status([p for p in parts if p], line.content_size.width or self.size.width)
        if text != line.content:      # redrawn only when it changed (the UI stays idle beside a job)
            line.update(text, layout=False)   # one line, its size fixed

    # ------------------------------------------------------------ the job's news
    @on(msg.JobBegan)
    def job_began(self, message: msg.JobBegan) -> None:
        self.query_one(TipsPanel).follow_job()        # the Tips tab follows the new job
        self.buffers.clear()
        self.query_one(ChartsPanel).flush()          # the last job's curves go at once
        self.query_one(JobPanel).set_state("running", message.label, message.detail)
        self.log_line(message.announce, "bold")
        if message.charts:
            self.show_tab("tab-charts")
        self.query_one(RunHistory).poll()
        self.app.refresh_state()

    @on(msg.JobEvents)
    def job_events(self, message: msg.JobEvents) -> None:
        """A followed run's news since the last poll: each event handled as if alone, the progress shown once at
        the end (no timer: the batch is already at most one a second)."""
        for event in message.events:
            getattr(self, EVENT_MESSAGES[type(event)])(msg.message_for(event))
        self.query_one(JobPanel).show_pending()

    @on(msg.JobProgress)
    def job_progress(self, message: msg.JobProgress) -> None:
        event = message.event
        self.query_one(JobPanel).take_progress(event)
        if event.loss is not None and event.steps:
            self.buffers.add(event.stage, LIVE_SPLIT, max(event.epoch, 1) - 1 + event.step / event.steps,
                             {"loss": event.loss})
            self.query_one(ChartsPanel).changed()

    @on(msg.JobMetrics)
    def job_metrics(self, message: msg.JobMetrics) -> None:
        event = message.event
        self.buffers.add(event.stage, event.split, event.epoch, event.values)
        self.query_one(ChartsPanel).changed()
        self.query_one(TipsPanel).add_record({"job": event.job, "stage": event.stage, "epoch": event.epoch,
                                              "step": event.step, "split": event.split, **event.values})
        if event.split != "train":
            shown = "  ".join(f"{k} {v:.4g}" for k, v in event.values.items() if isinstance(v, (int, float)))
            self.log_line(f"{event.stage} epoch {event.epoch} {event.split}: {shown}", "cyan")

    @on(msg.JobLog)
    def job_log(self, message: msg.JobLog) -> None:
        event = message.event
        self.log_line(f"[{event.job}] {event.message}", {"warning": "yellow", "error": "red"}.get(event.level, ""))

    @on(msg.JobSamples)
    def job_samples(self, message: msg.JobSamples) -> None:
        self.log_line(f"samples of epoch {message.event.epoch}: {message.event.path}", "dim")
        top = self.app.screen
        if isinstance(top, SamplesScreen) and Path(message.event.path).parent.parent == top.run_dir:
            top.reload()

    @on(msg.JobFinished)
    def job_finished(self, message: msg.JobFinished) -> None:
        self.query_one(JobPanel).show_pending()
        self.query_one(ChartsPanel).flush()      # the final curves at once
        event = message.event
        state = "stopped" if event.stopped else "finished"
        summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in event.summary.items() if v is not None and not isinstance(v, (dict, list)))
        self.query_one(JobPanel).set_state(state, detail=(f"run: {event.run_dir.name}" if event.run_dir else ""))
        self.log_line(f"■ {event.job} {state}" + (f": {summary}" if summary else ""), "bold green")
        verdict = pipeline_verdict(event.summary) if event.job == "pipeline" and not event.stopped else None
        if verdict:
            self.log_line(verdict, "bold")
        where = event.run_dir / "last.pt" if event.run_dir else None
        if event.stopped:
            self.log_line(event.resume_hint or (f"resumable checkpoint: {where}" if where and where.exists() else
                                                "nothing resumable was saved"), "yellow")
        if event.run_dir is not None:
            self.query_one(RunHistory).reload(self.app.preset.runtime.runs_dir)
            eval_json = event.summary.get("eval_json")     # a pipeline links its evaluate stage's eval.json
            self.show_evaluation(Path(eval_json).parent if eval_json else Path(event.run_dir))
        if event.stopped:
            self.app.notify(f"{event.job} stopped: resumable checkpoint {where}" if where and where.exists() else
                            event.resume_hint or
                            f"{event.job} stopped" + (f" (run {event.run_dir})" if event.run_dir else ""),
                            severity="warning", timeout=10)
        else:
            out = event.summary.get("out")    # export: the model folder it wrote
            self.app.notify(f"{event.job} finished" + (f": {out}" if out else ""), timeout=10 if out else None)
        self.update_tips()

    @on(msg.JobFailed)
    def job_failed(self, message: msg.JobFailed) -> None:
        self.query_one(JobPanel).show_pending()
        self.query_one(ChartsPanel).flush()
        event = message.event
        self.query_one(JobPanel).set_state("failed", detail=error_detail(event.error))
        self.log_line(f"✗ {event.job} failed: {event.error}", "bold red")
        if event.traceback:
            self.log_line(event.traceback, "dim")
        self.app.notify(event.error, title=f"{event.job} failed", severity="error", timeout=15)
        self.update_tips()     # a diverged run's metrics call for tips too

    @on(msg.JobStateChanged)
    def job_state(self, message: msg.JobStateChanged) -> None:
        self.query_one(JobPanel).set_state(message.state, detail=message.detail or None)
        if message.run is not None:
            self.query_one(JobPanel).watch_detached(message.run)
        self.app.refresh_state()

    @on(msg.JobEnded)
    def job_ended(self, message: msg.JobEnded) -> None:
        if message.run_dir is not None:
            self.query_one(RunHistory).reload(self.app.preset.runtime.runs_dir)
        self.app.refresh_state()
        if self.app.jobs.quit_when_idle:
            self.app.exit(0)
