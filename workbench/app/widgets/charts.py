"""Live charts (textual-plotext) fed from bounded metric buffers and redrawn on a timer.

Events only append to ``MetricBuffers``; a 3 Hz timer asks each chart to redraw, and a chart
skips the work when it is hidden or when neither the data nor its options changed. Series are
downsampled to about twice the plot's width. Log-y plots log10 of the values with our own tick
labels (plotext's log scale breaks on repeated builds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from workbench.app.metric_buffers import LIVE_SPLIT, MetricBuffers, downsample, smooth

REDRAW_HZ = 3.0
SMOOTHING_STEPS = (0.0, 0.6, 0.9)
COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow")


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


DSR_TERMS = ("loss", "l1", "perceptual", "identity", "feature_match", "tv")
FT_STAGES = ("pretrain", "stage1", "stage2")

CHARTS = (
    ChartSpec("chart-dsr-train", "DSR losses · train",
              (Line("dsr", LIVE_SPLIT, "loss", "loss (steps)"),
               *(Line("dsr", "train", term, term) for term in DSR_TERMS))),
    ChartSpec("chart-dsr-val", "DSR losses · val", tuple(Line("dsr", "val", term, term) for term in DSR_TERMS)),
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


class MetricChart(PlotextPlot):
    def __init__(self, spec: ChartSpec, **kwargs) -> None:
        super().__init__(id=spec.chart_id, **kwargs)
        self.spec = spec
        self.log_y = False
        self.smoothing = 0.0
        self.draws = 0
        self.title_text = ""
        self._drawn_key: tuple | None = None

    def redraw(self, current: MetricBuffers, overlay: MetricBuffers | None) -> bool:
        """Rebuild the plot if visible and changed; True when it drew."""
        if not self.is_mounted or not self.is_on_screen or self.size.area == 0:
            return False
        key = (current.version, id(overlay), overlay.version if overlay else -1, self.log_y, self.smoothing,
               self.size.width)
        if key == self._drawn_key:
            return False
        self._drawn_key = key
        self._build(current, overlay)
        self.draws += 1
        self.refresh()
        return True

    def _build(self, current: MetricBuffers, overlay: MetricBuffers | None) -> None:
        plt = self.plt
        plt.clear_figure()
        limit = max(8, 2 * self.size.width)
        log_y = self.log_y and self.spec.loggable
        drawn: list[float] = []
        sources = [(current, "", None)] + ([(overlay, "past ", "gray")] if overlay else [])
        for buffers, prefix, fixed_color in sources:
            for index, line in enumerate(self.spec.lines):
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
                plt.plot(xs, ys, label=prefix + line.label, marker="braille",
                         color=fixed_color or COLORS[index % len(COLORS)])
        title = self.spec.title
        reference = self.spec.reference
        if reference is not None:
            value = current.last(reference.stage, reference.split, reference.name)
            if value is None and overlay:
                value = overlay.last(reference.stage, reference.split, reference.name)
            if value is not None:
                plt.hline(value, color="red")
                drawn.append(value)
                title += f" · {reference.label} {value:.2f} (red)"
        if log_y and drawn:
            ticks, labels = log_ticks(min(drawn), max(drawn))
            plt.yticks(ticks, labels)
            title += " · log"
        if self.smoothing:
            title += f" · smooth {self.smoothing:g}"
        self.title_text = title if drawn else f"{title} · no data yet"
        plt.title(self.title_text)
        plt.xlabel("epoch")


class ChartsPanel(Grid):
    """All charts; owns the redraw timer and the log-y / smoothing options."""

    def __init__(self, current: MetricBuffers, **kwargs) -> None:
        super().__init__(**kwargs)
        self.current = current
        self.overlay: MetricBuffers | None = None
        self.log_y = False
        self.smoothing = 0.0

    def compose(self) -> ComposeResult:
        for spec in CHARTS:
            yield MetricChart(spec)

    def on_mount(self) -> None:
        self.set_interval(1 / REDRAW_HZ, self.redraw)

    def redraw(self) -> int:
        """Redraw the charts that need it; returns how many drew."""
        return sum(chart.redraw(self.current, self.overlay) for chart in self.query(MetricChart))

    def set_overlay(self, overlay: MetricBuffers | None) -> None:
        self.overlay = overlay

    def toggle_log_y(self) -> bool:
        self.log_y = not self.log_y
        for chart in self.query(MetricChart):
            chart.log_y = self.log_y
        return self.log_y

    def cycle_smoothing(self) -> float:
        position = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(position + 1) % len(SMOOTHING_STEPS)]
        for chart in self.query(MetricChart):
            chart.smoothing = self.smoothing
        return self.smoothing
