"""Device, mixed precision, seeding and threads, resolved from a preset's [runtime] section."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch

from engine.errors import PresetError
from engine.presets import Preset


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None   # None = full precision

    def autocast(self):
        """Autocast context for forward passes (a no-op without AMP)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16


def resolve(preset: Preset) -> Runtime:
    rt = preset.runtime
    if rt.num_threads:
        torch.set_num_threads(rt.num_threads)
    name = rt.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PresetError(f"{preset.source or preset.name}: 'runtime.device' is {name!r}, which torch does not know. "
                          "Use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PresetError(f"{preset.source or preset.name}: 'runtime.device' is {name!r} but CUDA is not available "
                          "here (no GPU or no driver). Set runtime.device = \"auto\" or \"cpu\".")
    amp = rt.amp
    if device.type != "cuda" or amp == "off":
        dtype = None
    elif amp == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return Runtime(device=device, amp_dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
