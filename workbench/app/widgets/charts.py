"""Live charts (textual-plotext) fed from bounded metric buffers and redrawn on a timer.

Events only append to ``MetricBuffers``; a 1 Hz timer asks each chart to redraw, and a chart
skips the work when it is hidden or when neither its own series nor its options changed. Series are
downsampled to about twice the plot's width. Log-y plots log10 of the values with our own tick
labels (plotext's log scale breaks on repeated builds). Every axis gets short, distinct tick labels
(3 significant digits, more in a narrow range), titles are cut to the plot's width, and the legend is
a line of text under the plot (plotext's own legend covers the data). Past runs are overlaid in their own colours, each
named in the legend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from workbench.app.metric_buffers import LIVE_SPLIT, MetricBuffers, downsample, smooth

# plotext redraws run on the UI thread; beside a CPU training job each costs the job its OpenMP team's time
# (bench_train.py: attached with charts on screen 1.04-1.08 at one redraw every 1-2 s, 1.01 with them hidden)
REDRAW_SECONDS = 5.0   # new job data is drawn at most this long after it arrived (TensorBoard: 30 s)
SMOOTHING_STEPS = (0.0, 0.6, 0.9)
COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow")
OVERLAY_COLORS = ("gray", "magenta", "yellow", "blue", "green", "orange")
RICH_COLORS = {"orange": "dark_orange", "gray": "grey62"}   # plotext colour names that Rich spells otherwise
Overlay = tuple[str, MetricBuffers]      # (run label, its metrics)


@dataclass(frozen=True)
class Line:
    stage: str
    split: str
    name: str
    label: str


@dataclass(frozen=True)
class ChartSpec:
    chart_id: str
    title: str
    lines: tuple[Line, ...]
    reference: Line | None = None     # drawn as a horizontal line at its last value
    loggable: bool = True
    overlay: tuple[str, ...] = ()     # metric names drawn for past runs (empty: every line)


DSR_TERMS = ("loss", "l1", "perceptual", "identity", "feature_match", "tv")
FT_STAGES = ("pretrain", "stage1", "stage2")

CHARTS = (
    ChartSpec("chart-dsr-train", "DSR losses · train",
              (Line("dsr", LIVE_SPLIT, "loss", "loss (steps)"),
               *(Line("dsr", "train", term, term) for term in DSR_TERMS)), overlay=("loss",)),
    ChartSpec("chart-dsr-val", "DSR losses · val", tuple(Line("dsr", "val", term, term) for term in DSR_TERMS),
              overlay=("loss",)),
    ChartSpec("chart-psnr", "val PSNR dB", (Line("dsr", "val", "psnr", "DSR"),),
              reference=Line("dsr", "val", "bicubic_psnr", "bicubic"), loggable=False),
    ChartSpec("chart-ft-loss", "Fine-tuning loss · train",
              tuple(Line(stage, "train", "loss", stage) for stage in FT_STAGES)),
    ChartSpec("chart-ft-top1", "Fine-tuning top-1 · val",
              tuple(Line(stage, "val", "top1", stage) for stage in FT_STAGES), loggable=False),
)


def log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick positions (log10 units) and labels (values) for a log10-transformed axis."""
    if high - low >= 1:
        ticks = [float(k) for k in range(math.ceil(low), math.floor(high) + 1)]
    else:
        ticks = [low, (low + high) / 2, high] if high > low else [low]
    return ticks, [f"{10 ** t:.3g}" for t in ticks]


def linear_ticks(low: float, high: float, count: int = 4) -> tuple[list[float], list[str]]:
    """``count`` evenly spaced ticks with short, distinct labels: 3 significant digits, more where a narrow
    range needs them (22.6 22.61 22.63 22.64, never 22.6 four times), else only the two ends."""
    if not high > low:
        return [low], [f"{low:.3g}"]
    for number, most in ((count, 5), (2, 9)):
        ticks = [low + (high - low) * i / (number - 1) for i in range(number)]
        for digits in range(3, most + 1):
            labels = [f"{t:.{digits}g}" for t in ticks]
            if len(set(labels)) == len(labels):
                return ticks, labels
    return [low], [f"{low:.3g}"]           # the ends print alike even at 9 digits: one tick


def fit_title(title: str, width: int) -> str:
    """The title cut to ``width`` with an ellipsis (plotext drops a title wider than the plot)."""
    width = max(4, width - 2)
    return title if len(title) <= width else title[: width - 1].rstrip(" ·") + "…"


class MetricChart(PlotextPlot):
    def __init__(self, spec: ChartSpec, **kwargs) -> None:
        super().__init__(id=spec.chart_id, **kwargs)
        self.spec = spec
        self.log_y = False
        self.smoothing = 0.0
        self.draws = 0
        self.title_text = ""
        self.legend: list[tuple[str, str]] = []    # (label, plotext colour) of every drawn line
        self._drawn_key: tuple | None = None

    def redraw(self, current: MetricBuffers, overlays: list[Overlay]) -> bool:
        """Rebuild the plot if visible and changed; True when it drew."""
        if not self.is_mounted or not self.is_on_screen or self.size.area == 0:
            return False
        series = [(line.stage, line.split, line.name) for line in (*self.spec.lines, self.spec.reference) if line]
        key = (current.stamp(series), tuple((label, id(b), b.stamp(series)) for label, b in overlays), self.log_y,
               self.smoothing, self.size.width)
        if key == self._drawn_key:
            return False
        self._drawn_key = key
        self._build(current, overlays)
        self.draws += 1
        self.refresh()
        return True

    def _sources(self, current: MetricBuffers, overlays: list[Overlay]):
        """(buffers, line, label, colour) of every line to draw: the current run, then each past run."""
        several = len(self.spec.lines) > 1
        for index, line in enumerate(self.spec.lines):
            yield current, line, line.label, COLORS[index % len(COLORS)]
        for number, (run, buffers) in enumerate(overlays):
            lines = [line for line in self.spec.lines if line.split != LIVE_SPLIT and
                     (not self.spec.overlay or line.name in self.spec.overlay)]
            for line in lines:
                label = f"{run} {line.label}" if several and len(lines) > 1 else run
                yield buffers, line, label, OVERLAY_COLORS[number % len(OVERLAY_COLORS)]

    def _build(self, current: MetricBuffers, overlays: list[Overlay]) -> None:
        plt = self.plt
        plt.clear_figure()
        limit = max(8, 2 * self.size.width)
        log_y = self.log_y and self.spec.loggable
        drawn: list[float] = []
        self.legend = []
        for buffers, line, label, color in self._sources(current, overlays):
            points = downsample(buffers.series(line.stage, line.split, line.name), limit)
            if log_y:
                points = [(x, y) for x, y in points if y > 0]
            if not points:
                continue
            xs = [x for x, _ in points]
            ys = smooth([y for _, y in points], self.smoothing)
            if log_y:
                ys = [math.log10(y) for y in ys]
            drawn += ys
            plt.plot(xs, ys, marker="braille", color=color)
            self.legend.append((label, color))
        title = self.spec.title
        reference = self.spec.reference
        if reference is not None:
            value = current.last(reference.stage, reference.split, reference.name)
            for _, buffers in overlays:
                if value is None:
                    value = buffers.last(reference.stage, reference.split, reference.name)
            if value is not None:
                plt.hline(value, color="red")
                drawn.append(value)
                self.legend.append((reference.label, "red"))
                title += f" · {reference.label} {value:.2f}"
        if drawn:
            ticks, labels = log_ticks(min(drawn), max(drawn)) if log_y else linear_ticks(min(drawn), max(drawn))
            plt.yticks(ticks, labels)
        if log_y and drawn:
            title += " · log"
        if self.smoothing:
            title += f" · smooth {self.smoothing:g}"
        self.title_text = title if drawn else f"{title} · no data yet"
        plt.title(fit_title(self.title_text, self.size.width))
        plt.xlabel("epoch")

    def legend_text(self) -> Text:
        text = Text(no_wrap=False)
        for label, color in self.legend:
            if text:
                text.append("  ")
            text.append("━ ", style=RICH_COLORS.get(color, color))
            text.append(label)
        return text


class ChartBox(Vertical):
    """A chart and its legend line."""

    def __init__(self, spec: ChartSpec) -> None:
        super().__init__(classes="chart-box")
        self.spec = spec

    def compose(self) -> ComposeResult:
        yield MetricChart(self.spec)
        yield Static("", classes="chart-legend")


class ChartsPanel(Grid, can_focus=True):
    """All charts; owns the redraw timer, the log-y / smoothing options and the overlaid runs, and their keys."""

    BINDINGS = [
        Binding("l", "toggle_log_y", "Log-y", id="charts.log_y", tooltip="log-scale the loss charts (on/off)"),
        Binding("s", "smoothing", "Smoothing", id="charts.smoothing", tooltip="cycle the curves' smoothing"),
        Binding("o", "clear_overlay", "Clear overlay", id="charts.clear_overlay",
                tooltip="remove the overlaid runs' curves (the current job's stay)"),
    ]

    def __init__(self, current: MetricBuffers, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current = current
        self._timer = None          # the one pending redraw (armed by ``changed``; none while nothing changes)
        self.overlays: list[Overlay] = []
        self.log_y = False
        self.smoothing = 0.0

    def compose(self) -> ComposeResult:
        for spec in CHARTS:
            yield ChartBox(spec)

    def changed(self) -> None:
        """New job data: the charts redraw within REDRAW_SECONDS (one timer at a time; an app beside a quiet job
        wakes for nothing)."""
        if self._timer is None:
            self._timer = self.set_timer(REDRAW_SECONDS, self.flush)

    def flush(self) -> int:
        """Redraw now what changed (what the user asked for shows at once)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        return self.redraw()

    def on_show(self) -> None:
        self.call_after_refresh(self.flush)     # hidden charts skipped their redraws

    def redraw(self) -> int:
        """Redraw the charts that need it; returns how many drew."""
        drew = 0
        for box in self.query(ChartBox):
            chart = box.query_one(MetricChart)
            if chart.redraw(self.current, self.overlays):
                drew += 1
                legend, line = chart.legend_text(), box.query_one(".chart-legend", Static)
                if legend != line.content:     # an unchanged legend costs no layout pass of the screen
                    line.update(legend)
        return drew

    def set_overlays(self, overlays: list[Overlay]) -> None:
        """Past runs drawn beside the current one, each named in the legends (an empty list clears)."""
        self.overlays = list(overlays)
        self.flush()
        self.refresh_bindings()

    def toggle_log_y(self) -> bool:
        self.log_y = not self.log_y
        for chart in self.query(MetricChart):
            chart.log_y = self.log_y
        self.flush()
        return self.log_y

    def cycle_smoothing(self) -> float:
        position = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(position + 1) % len(SMOOTHING_STEPS)]
        for chart in self.query(MetricChart):
            chart.smoothing = self.smoothing
        self.flush()
        return self.smoothing

    # ----------------------------------------------------------------- keys
    def why_disabled(self, action: str) -> str:
        if action == "clear_overlay" and not self.overlays:
            return ("nothing is overlaid, so o has nothing to clear: Enter on a run in the Runs tab overlays its "
                    "curves on the charts, space marks runs and c overlays the marked ones")
        return ""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.why_disabled(action) else True

    def action_toggle_log_y(self) -> None:
        self.notify(f"log-y {'on' if self.toggle_log_y() else 'off'} (loss charts)")

    def action_smoothing(self) -> None:
        weight = self.cycle_smoothing()
        self.notify(f"smoothing {weight:g}" if weight else "smoothing off")

    def action_clear_overlay(self) -> None:
        count = len(self.overlays)
        self.set_overlays([])
        self.notify(f"cleared {count} overlaid run(s): the charts show the current job only")
        self.refresh_bindings()
