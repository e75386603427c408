"""GPU memory readings for the VRAM gauge: NVML (the whole device) and torch (this process).

Every NVML call is wrapped: no driver, no GPU or an unsupported query gives a reading with
``available=False`` and a short reason, never an exception. NVML indices are not CUDA indices
under ``CUDA_VISIBLE_DEVICES``, so the device torch uses is found by its PCI bus id. torch is only
read when it is already imported and CUDA is initialised (the UI never starts CUDA itself).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class VramReading:
    available: bool
    reason: str = ""                   # why there is no reading ("no GPU", ...)
    name: str = ""
    used_mib: float | None = None      # NVML: the whole device
    total_mib: float | None = None
    allocated_mib: float | None = None  # torch: this process
    reserved_mib: float | None = None

    @property
    def used_fraction(self) -> float | None:
        if self.used_mib is None or not self.total_mib:
            return None
        return self.used_mib / self.total_mib


NO_GPU = VramReading(available=False, reason="no GPU")


def _torch_cuda() -> Any | None:
    """``torch.cuda`` when torch is imported and CUDA initialised in this process, else None."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return torch.cuda
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not crash the gauge
        return None
    return None


def pci_bus_id(domain: int, bus: int, device: int) -> str:
    """The NVML form of a PCI address, e.g. ``00000000:3B:00.0``."""
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


class VramProbe:
    """Reads NVML and torch; ``read()`` never raises. Create in the polling thread, call ``close()`` there."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml
        self._ready = False
        self._failure = ""

    def _init(self) -> bool:
        if self._ready:
            return True
        if self._failure:
            return False
        try:
            if self._nvml is None:
                import pynvml
                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._ready = True
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ImportError...
            self._failure = f"NVML unavailable ({type(exc).__name__})"
        return self._ready

    def _handle(self, cuda: Any | None) -> Any:
        nvml = self._nvml
        if cuda is not None:
            props = cuda.get_device_properties(cuda.current_device())
            bus = pci_bus_id(props.pci_domain_id, props.pci_bus_id, props.pci_device_id)
            return nvml.nvmlDeviceGetHandleByPciBusId(bus)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(visible)
        if nvml.nvmlDeviceGetCount() == 0:
            raise LookupError("no GPU")
        return nvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)

    def read(self) -> VramReading:
        cuda = _torch_cuda()
        allocated = reserved = None
        if cuda is not None:
            try:
                allocated = cuda.memory_allocated() / MIB
                reserved = cuda.memory_reserved() / MIB
            except Exception:  # noqa: BLE001
                allocated = reserved = None
        if not self._init():
            if allocated is not None:
                return VramReading(True, reason=self._failure, allocated_mib=allocated, reserved_mib=reserved)
            return VramReading(False, reason="no GPU")
        try:
            handle = self._handle(cuda)
            info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            name = self._nvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            return VramReading(True, name=name, used_mib=info.used / MIB, total_mib=info.total / MIB,
                               allocated_mib=allocated, reserved_mib=reserved)
        except Exception as exc:  # noqa: BLE001 - any NVML failure is shown as n/a
            if allocated is not None:
                return VramReading(True, reason=f"NVML: {type(exc).__name__}", allocated_mib=allocated,
                                   reserved_mib=reserved)
            return VramReading(False, reason="no GPU")

    def close(self) -> None:
        if self._ready:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self._ready = False
