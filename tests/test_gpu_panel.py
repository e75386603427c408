"""The GPU panel against a fake nvitop device list (two GPUs, one with another process), torch's
device found by PCI bus id, and "no GPU" on this machine (nothing printed over the app)."""

from __future__ import annotations

from types import SimpleNamespace

from workbench.app import gpu_probe
from workbench.app.gpu_probe import GpuProbe, pci_bus_id
from workbench.app.widgets.vram_gauge import VramGauge, sparkline

from app_helpers import make_app, wait_for

GIB = 1024 ** 3
NA = "N/A"    # what nvitop returns for a value it cannot read


class FakeProcess:
    def __init__(self, name, memory):
        self._name, self._memory = name, memory

    def name(self):
        return self._name

    def gpu_memory(self):
        return self._memory


class FakeDevice:
    """The part of nvitop's ``Device`` the probe uses."""

    def __init__(self, index, bus, util, used, processes=None, power=250_000):
        self._index, self._bus, self.util, self._used, self._processes, self._power = \
            index, bus, util, used, processes or {}, power

    def index(self):
        return self._index

    def bus_id(self):
        return self._bus

    def name(self):
        return "NVIDIA H100 80GB HBM3"

    def gpu_utilization(self):
        return self.util

    def memory_used(self):
        return self._used

    def memory_total(self):
        return 80 * GIB

    def temperature(self):
        return 61

    def power_usage(self):
        return self._power

    def power_limit(self):
        return 700_000

    def processes(self):
        return self._processes


def two_gpus(util=(37, 5)):
    other = {4242: FakeProcess("python train_other.py", 20 * GIB)}
    return [FakeDevice(0, "00000000:3B:00.0", util[0], 12 * GIB),
            FakeDevice(1, "00000000:5E:00.0", util[1], 21 * GIB, processes=other, power=NA)]


def fake_cuda(bus=0x5E):
    props = SimpleNamespace(pci_domain_id=0, pci_bus_id=bus, pci_device_id=0)
    return SimpleNamespace(current_device=lambda: 0, get_device_properties=lambda i: props,
                           memory_allocated=lambda: GIB // 2, memory_reserved=lambda: GIB)


def test_probe_reads_every_device_and_marks_other_processes(monkeypatch):
    monkeypatch.setattr(gpu_probe, "_torch_cuda", lambda: fake_cuda(0x5E))
    snapshot = GpuProbe(devices=two_gpus).read()
    assert snapshot.available and [d.index for d in snapshot.devices] == [0, 1]
    first, second = snapshot.devices
    assert first.utilization == 37 and first.memory_used_mib == 12 * 1024 and first.memory_total_mib == 80 * 1024
    assert first.temperature_c == 61 and first.power_w == 250 and first.power_limit_w == 700
    assert second.power_w is None                               # N/A stays unknown, never a crash
    assert [p.pid for p in second.others] == [4242] and second.others[0].memory_mib == 20 * 1024
    assert first.allocated_mib is None and second.allocated_mib == 512 and second.reserved_mib == 1024
    assert pci_bus_id(0, 0x5E, 0) == "00000000:5E:00.0"


def test_probe_marks_this_app_and_survives_failing_queries(monkeypatch):
    monkeypatch.setattr(gpu_probe, "_torch_cuda", lambda: None)
    import os

    device = FakeDevice(0, "x", 10, GIB, processes={os.getpid(): FakeProcess("vlr-workbench", GIB)})
    device.temperature = lambda: (_ for _ in ()).throw(RuntimeError("NVML_ERROR_NOT_SUPPORTED"))
    reading = GpuProbe(devices=lambda: [device]).read().devices[0]
    assert reading.temperature_c is None and reading.processes[0].this_app and reading.others == ()

    def broken():
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")
    assert GpuProbe(devices=broken).read().reason.startswith("no GPU (NVML unavailable: OSError")


def test_no_gpu_on_this_machine_prints_nothing(capfd):
    snapshot = GpuProbe().read()         # the real nvitop: no driver here
    assert not snapshot.available and snapshot.reason.startswith("no GPU")
    captured = capfd.readouterr()
    assert "FATAL" not in captured.err + captured.out


def test_sparkline_scales_values():
    assert sparkline([0, 50, 100]) == "▁▅█" and sparkline([]) == ""


async def test_panel_shows_two_gpus_history_and_the_other_process(monkeypatch):
    monkeypatch.setattr(gpu_probe, "_torch_cuda", lambda: fake_cuda(0x5E))
    utils = iter([(10, 0), (50, 0), (90, 100)] + [(90, 100)] * 1000)
    app = make_app(remember=False, probe_factory=lambda: GpuProbe(devices=lambda: two_gpus(next(utils))))
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one(VramGauge)
        panel.interval = 0.05
        await wait_for(pilot, lambda: len(panel.util_history.get(0, ())) >= 3, what="three readings")
        text = panel.describe().plain
        assert "GPU0 NVIDIA H100 80GB HBM3 · 61°C · 250/700 W" in text and "GPU1" in text
        assert "▁▅█" in text                                        # the history sparkline: 10, 50, 90 %
        assert list(panel.util_history[0])[:3] == [10, 50, 90]
        assert "12.0/80.0 GiB" in text and "this job 0.50 GiB alloc · 1.00 reserved" in text
        assert "other processes: 4242 python train_other.py 20.0 GiB" in text
        assert "GPU0" in panel.status_text() and "GPU1" in panel.status_text()


async def test_panel_says_no_gpu_once_and_stops_polling():
    """No driver or no device: read once (polling on would take CPU from a job on a CPU-only machine)."""
    reads = []

    class CountingNoGpu:
        def read(self):
            reads.append(1)
            return gpu_probe.NO_GPU

        def close(self):
            pass

    app = make_app(remember=False, probe_factory=CountingNoGpu)
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one(VramGauge)
        panel.interval = 0.05
        await wait_for(pilot, lambda: panel.reading is not None, what="a reading")
        assert panel.describe().plain.startswith("no GPU") and panel.status_text() == "no GPU"
        await pilot.pause(0.5)
        assert len(reads) == 1
