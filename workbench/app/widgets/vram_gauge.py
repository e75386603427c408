"""The GPU panel: per device utilisation, memory, temperature, power, this job's torch memory, a short
history sparkline and the other processes on the device; "no GPU" without a driver.

A thread worker polls the probe (``GpuProbe.read`` never raises) once a second and hands each
snapshot to the UI thread; the panel keeps the last ``HISTORY`` readings per device.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from rich.text import Text
from textual import work
from textual.containers import Vertical
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Static
from textual.worker import get_current_worker

from workbench.app.gpu_probe import GpuProbe, GpuReading, GpuSnapshot

HISTORY = 30                 # readings kept per device for the sparklines (30 s at 1 Hz)
BLOCKS = "▁▂▃▄▅▆▇█"
OTHERS_SHOWN = 3


def sparkline(values: list[float], low: float = 0.0, high: float = 100.0) -> str:
    """One block character per value, scaled to [low, high]."""
    if high <= low:
        return ""
    cells = []
    for value in values:
        fraction = min(1.0, max(0.0, (value - low) / (high - low)))
        cells.append(BLOCKS[min(len(BLOCKS) - 1, int(fraction * len(BLOCKS)))])
    return "".join(cells)


def _gib(mib: float | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f}"


def describe_device(reading: GpuReading, util_history: list[float], mem_history: list[float]) -> Text:
    text = Text()
    head = f"GPU{reading.index} {reading.name}"
    if reading.temperature_c is not None:
        head += f" · {reading.temperature_c:.0f}°C"
    if reading.power_w is not None:
        head += f" · {reading.power_w:.0f}" + (f"/{reading.power_limit_w:.0f}" if reading.power_limit_w else "") + " W"
    text.append(head + "\n", style="bold")
    util = "n/a" if reading.utilization is None else f"{reading.utilization:3.0f}%"
    text.append(f"util {util} ")
    text.append(sparkline(util_history) + "\n", style="green")
    text.append(f"mem  {_gib(reading.memory_used_mib)}/{_gib(reading.memory_total_mib)} GiB ")
    text.append(sparkline([100 * f for f in mem_history]), style="cyan")
    if reading.allocated_mib is not None:
        text.append(f"\nthis job {reading.allocated_mib / 1024:.2f} GiB alloc · "
                    f"{(reading.reserved_mib or 0) / 1024:.2f} reserved")
    others = reading.others
    if others:
        shown = ", ".join(f"{p.pid} {p.name} {_gib(p.memory_mib)} GiB" for p in others[:OTHERS_SHOWN])
        more = f" +{len(others) - OTHERS_SHOWN}" if len(others) > OTHERS_SHOWN else ""
        text.append(f"\nother processes: {shown}{more}", style="yellow")
    return text


class VramGauge(Vertical):
    """The GPU panel (id ``vram``); ``reading`` is the last ``GpuSnapshot``."""

    BORDER_TITLE = "GPU"

    class Changed(Message):
        """The reading shows something new (the status line follows it; an unchanged one wakes nothing)."""

    def __init__(self, probe_factory: Callable[[], GpuProbe] = GpuProbe, interval: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe_factory = probe_factory
        self.interval = interval
        self.reading: GpuSnapshot | None = None
        self.util_history: dict[int, deque[float]] = {}
        self.mem_history: dict[int, deque[float]] = {}

    def compose(self) -> ComposeResult:
        yield Static("checking GPU…", id="vram-text")

    def on_mount(self) -> None:
        self._poll()

    @work(thread=True, exit_on_error=False, exclusive=True, group="vram", name="vram")
    def _poll(self) -> None:
        worker = get_current_worker()
        probe = self.probe_factory()
        try:
            while not worker.is_cancelled:
                reading = probe.read()
                try:
                    self.app.call_from_thread(self.show, reading)
                except RuntimeError:  # the app is shutting down
                    return
                if not reading.available:   # no driver or no device: none appears while the app runs
                    return                  # (polling on would only take CPU from a job on a CPU machine)
                deadline = time.monotonic() + self.interval
                while not worker.is_cancelled and time.monotonic() < deadline:
                    time.sleep(0.25)
        finally:
            probe.close()

    def show(self, reading: GpuSnapshot) -> None:
        self.reading = reading
        for device in reading.devices:
            if device.utilization is not None:
                self.util_history.setdefault(device.index, deque(maxlen=HISTORY)).append(device.utilization)
            if device.memory_fraction is not None:
                self.mem_history.setdefault(device.index, deque(maxlen=HISTORY)).append(device.memory_fraction)
        text, shown = self.describe(), self.query_one("#vram-text", Static)
        if text != shown.content:     # an unchanged text is not drawn again
            shown.update(text)
            self.post_message(self.Changed())

    def describe(self) -> Text:
        reading = self.reading
        if reading is None:
            return Text("checking GPU…")
        if not reading.available:
            return Text.assemble(("no GPU", "bold"), (f"  CPU only ({reading.reason})"
                                                      if reading.reason != "no GPU" else "  CPU only", "dim"))
        parts = [describe_device(d, list(self.util_history.get(d.index, ())), list(self.mem_history.get(d.index, ())))
                 for d in reading.devices]
        return Text("\n").join(parts)

    def status_text(self) -> str:
        reading = self.reading
        if reading is None:
            return "GPU ?"
        if not reading.available:
            return "no GPU"
        return " · ".join(f"GPU{d.index} " + ("" if d.utilization is None else f"{d.utilization:.0f}% ") +
                          f"{_gib(d.memory_used_mib)}/{_gib(d.memory_total_mib)} GiB" for d in reading.devices)
