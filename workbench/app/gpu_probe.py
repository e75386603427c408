"""GPU readings for the GPU panel, through nvitop's ``Device`` API (NVML underneath).

Per device: utilisation, memory used/total, temperature, power and its limit, and the processes on
it (this app's own marked); plus this process's torch allocated/reserved memory on the device torch
uses. ``read()`` never raises: no driver, no GPU or a failing query gives ``GpuSnapshot(devices=())``
with a reason. nvitop logs a "FATAL ERROR" when NVML is missing; that logger is silenced so nothing
is written over the app. Values nvitop cannot read (``N/A``) become None.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

MIB_F = 1024.0 * 1024.0


def _torch_cuda() -> Any | None:
    """``torch.cuda`` when torch is imported and CUDA initialised in this process (the UI never starts
    CUDA itself), else None."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return torch.cuda
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not crash the panel
        return None
    return None


def pci_bus_id(domain: int, bus: int, device: int) -> str:
    """The NVML form of a PCI address, e.g. ``00000000:3B:00.0`` (how torch's device is found among NVML's)."""
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


@dataclass(frozen=True)
class GpuProcessReading:
    pid: int
    name: str
    memory_mib: float | None
    this_app: bool


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization: float | None          # percent
    memory_used_mib: float | None
    memory_total_mib: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcessReading, ...] = ()
    allocated_mib: float | None = None  # torch, this process (on the device torch uses)
    reserved_mib: float | None = None

    @property
    def memory_fraction(self) -> float | None:
        if self.memory_used_mib is None or not self.memory_total_mib:
            return None
        return self.memory_used_mib / self.memory_total_mib

    @property
    def others(self) -> tuple[GpuProcessReading, ...]:
        return tuple(p for p in self.processes if not p.this_app)


@dataclass(frozen=True)
class GpuSnapshot:
    devices: tuple[GpuReading, ...] = ()
    reason: str = ""                    # why there are no devices ("no GPU", "NVML unavailable ...")

    @property
    def available(self) -> bool:
        return bool(self.devices)


NO_GPU = GpuSnapshot(reason="no GPU")


def _number(value: Any, scale: float = 1.0) -> float | None:
    """nvitop's value (a number, or the string 'N/A') as a float in the wanted unit."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) / scale


def _call(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)()
    except Exception:  # noqa: BLE001 - one failing query must not hide the others
        return None


def nvitop_devices() -> list[Any]:
    """Every device nvitop sees (an empty list without NVML); nvitop's NVML-missing log is silenced."""
    logging.getLogger("nvitop").addHandler(logging.NullHandler())
    logging.getLogger("nvitop").propagate = False
    from nvitop import Device

    return list(Device.all())


class GpuProbe:
    """Create in the polling thread; ``read()`` never raises."""

    def __init__(self, devices: Callable[[], Iterable[Any]] = nvitop_devices) -> None:
        self.devices = devices
        self.pid = os.getpid()

    def read(self) -> GpuSnapshot:
        try:
            devices = list(self.devices())
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, ...
            return GpuSnapshot(reason=f"no GPU (NVML unavailable: {type(exc).__name__})")
        if not devices:
            return NO_GPU
        torch_bus, allocated, reserved = self._torch_memory()
        readings = []
        for position, device in enumerate(devices):
            bus = _call(device, "bus_id")
            mine = (torch_bus is not None and isinstance(bus, str) and bus.upper().endswith(torch_bus[-12:])) or \
                   (torch_bus is None and allocated is not None and position == 0)
            readings.append(self._reading(device, position, allocated if mine else None, reserved if mine else None))
        return GpuSnapshot(tuple(readings))

    def _reading(self, device: Any, position: int, allocated: float | None, reserved: float | None) -> GpuReading:
        index = _call(device, "index")
        name = _call(device, "name")
        power, limit = _call(device, "power_usage"), _call(device, "power_limit")   # milliwatts
        return GpuReading(index=index if isinstance(index, int) else position,
                          name=name if isinstance(name, str) else "GPU",
                          utilization=_number(_call(device, "gpu_utilization")),
                          memory_used_mib=_number(_call(device, "memory_used"), MIB_F),
                          memory_total_mib=_number(_call(device, "memory_total"), MIB_F),
                          temperature_c=_number(_call(device, "temperature")),
                          power_w=_number(power, 1000.0), power_limit_w=_number(limit, 1000.0),
                          processes=self._processes(device), allocated_mib=allocated, reserved_mib=reserved)

    def _processes(self, device: Any) -> tuple[GpuProcessReading, ...]:
        found = _call(device, "processes") or {}
        out = []
        for pid, process in sorted(found.items()) if isinstance(found, dict) else ():
            name = _call(process, "name")
            out.append(GpuProcessReading(pid=int(pid), name=name if isinstance(name, str) else "?",
                                         memory_mib=_number(_call(process, "gpu_memory"), MIB_F),
                                         this_app=int(pid) == self.pid))
        return tuple(out)

    @staticmethod
    def _torch_memory() -> tuple[str | None, float | None, float | None]:
        """(PCI bus id, allocated MiB, reserved MiB) of this process's torch device; Nones without CUDA."""
        cuda = _torch_cuda()
        if cuda is None:
            return None, None, None
        try:
            props = cuda.get_device_properties(cuda.current_device())
            bus = pci_bus_id(props.pci_domain_id, props.pci_bus_id, props.pci_device_id)
            return bus, cuda.memory_allocated() / MIB_F, cuda.memory_reserved() / MIB_F
        except Exception:  # noqa: BLE001
            return None, None, None

    def close(self) -> None:
        """nvitop shuts NVML down itself at exit."""
