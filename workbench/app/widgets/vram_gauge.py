"""The VRAM gauge: NVML used/total of the job's GPU and torch's allocated/reserved of this process.

A thread worker polls once a second (``VramProbe.read`` never raises); a clear "no GPU" state is
shown without NVML or CUDA.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from workbench.app.vram_probe import VramProbe, VramReading


def describe(reading: VramReading) -> Text:
    if not reading.available:
        return Text.assemble(("no GPU", "bold"), ("  CPU only (no NVML/CUDA)", "dim"))
    text = Text()
    if reading.used_mib is not None and reading.total_mib:
        text.append(f"{reading.name or 'GPU'}\n", style="bold")
        text.append(f"device {reading.used_mib / 1024:.1f}/{reading.total_mib / 1024:.1f} GiB")
    else:
        text.append(f"device n/a ({reading.reason})")
    if reading.allocated_mib is not None:
        text.append(f"\nthis process {reading.allocated_mib / 1024:.2f} GiB alloc · "
                    f"{reading.reserved_mib / 1024:.2f} GiB reserved")
    return text


class VramGauge(Vertical):
    BORDER_TITLE = "VRAM"

    def __init__(self, probe_factory: Callable[[], VramProbe] = VramProbe, interval: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe_factory = probe_factory
        self.interval = interval
        self.reading: VramReading | None = None

    def compose(self) -> ComposeResult:
        yield Static("checking GPU…", id="vram-text")
        yield ProgressBar(total=1.0, show_eta=False, show_percentage=True, id="vram-bar")

    def on_mount(self) -> None:
        self.query_one("#vram-bar").display = False
        self._poll()

    @work(thread=True, exit_on_error=False, exclusive=True, group="vram", name="vram")
    def _poll(self) -> None:
        worker = get_current_worker()
        probe = self.probe_factory()
        try:
            while not worker.is_cancelled:
                reading = probe.read()
                if reading != self.reading:
                    try:
                        self.app.call_from_thread(self.show, reading)
                    except RuntimeError:  # the app is shutting down
                        return
                deadline = time.monotonic() + self.interval
                while not worker.is_cancelled and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            probe.close()

    def show(self, reading: VramReading) -> None:
        self.reading = reading
        self.query_one("#vram-text", Static).update(describe(reading))
        bar = self.query_one("#vram-bar", ProgressBar)
        fraction = reading.used_fraction
        bar.display = fraction is not None
        if fraction is not None:
            bar.update(total=1.0, progress=fraction)

    def status_text(self) -> str:
        reading = self.reading
        if reading is None:
            return "GPU ?"
        if not reading.available:
            return "no GPU"
        if reading.used_fraction is not None:
            return f"VRAM {reading.used_mib / 1024:.1f}/{reading.total_mib / 1024:.1f} GiB"
        return "VRAM n/a"
