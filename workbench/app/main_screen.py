"""The main screen: tabs (Presets, Charts, Results, Runs, Sweeps, Tips, Log), the job/GPU sidebar, the status line.

Only the layout lives here; the panels post their own messages (``PresetList.Chosen``,
``RunHistory.Opened``, ...) and the app handles them. Dialogs and the samples view are screens
pushed on top of this one.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static, TabbedContent, TabPane

from workbench.app.gpu_probe import GpuProbe
from workbench.app.metric_buffers import MetricBuffers
from workbench.app.widgets.charts import ChartsPanel
from workbench.app.widgets.eval_table import EvalTable
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.preset_editor import PresetEditor
from workbench.app.widgets.preset_list import PresetList
from workbench.app.widgets.run_history import RunHistory
from workbench.app.widgets.sweeps_panel import SweepsPanel
from workbench.app.widgets.tips_panel import TipsPanel
from workbench.app.widgets.vram_gauge import VramGauge

LOG_LINES = 5000


class MainScreen(Screen):
    def __init__(self, buffers: MetricBuffers, probe_factory: Callable[[], GpuProbe]) -> None:
        super().__init__()
        self.buffers = buffers
        self.probe_factory = probe_factory
        self.filled = asyncio.Event()    # the app has filled the panels (it waits for this before it is ready)

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with TabbedContent(id="main", initial="tab-presets"):
                with TabPane("Presets", id="tab-presets"):
                    with Horizontal():
                        yield PresetList(id="presets")
                        yield PresetEditor(id="editor")
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

    async def on_resize(self) -> None:
        """The first time the screen has a size, the app fills the panels (tables laid out at their width)."""
        if not self.filled.is_set():
            try:
                await self.app.main_screen_mounted()
            finally:
                self.filled.set()
