"""Device, mixed precision, seeding and threads, resolved from a preset's [runtime] section, and the
levers of a lean training step (channels_last, an opt-in torch.compile, fused AdamW, backend flags).

Every lever is a preset field and off by default where it is slower: bf16 autocast runs on the CPU
only when ``runtime.amp = "bf16"`` (``auto`` means bf16/fp16 on CUDA, full precision on the CPU);
``runtime.channels_last`` and ``runtime.compile`` are opt-in. ``benchmarks/bench_train.py``
measures each against the straightforward baseline.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import shutil
from dataclasses import dataclass
from typing import Any, Callable

import torch

from engine.errors import PresetError
from engine.presets import Preset

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None   # None = full precision
    channels_last: bool = False
    compile: bool = False

    def autocast(self):
        """Autocast context for forward passes (a no-op without AMP)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def memory_format(self) -> torch.memory_format:
        """The memory format for image batches fed to the networks (match the model's)."""
        return torch.channels_last if self.channels_last else torch.contiguous_format


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
    return Runtime(device=device, amp_dtype=amp_dtype(rt.amp, device),
                   channels_last=bool(getattr(rt, "channels_last", False)), compile=bool(getattr(rt, "compile", False)))


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``runtime.amp`` on ``device``.

    CUDA: ``auto`` = bf16 where supported, else fp16 (with a GradScaler). CPU: ``bf16`` turns
    autocast on; ``auto`` does so only where the CPU computes bf16 natively (AVX512-BF16/AMX: 2x on
    the DSR step of cpu-demo, benchmarks/bench_train.py) and keeps full precision elsewhere, where
    bf16 is emulated and slower; fp16 autocast on the CPU is slow and never chosen.
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and (amp == "bf16" or amp == "auto" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX): bf16 autocast is then faster
    than fp32 (measured 2x on the DSR step of cpu-demo); elsewhere it is emulated and slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- step levers


def configure_backends(runtime: Runtime) -> None:
    """cuDNN autotuning (fixed image sizes) and TF32 matmuls on CUDA; nothing on the CPU."""
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def fused_adamw_kwargs(device: torch.device | str) -> dict[str, Any]:
    """AdamW keyword arguments for the fastest available update on ``device``.

    CUDA and CPU: ``fused=True``: one kernel for all parameters (on the CPU 0.14 ms against foreach's
    0.46 ms per step of cpu-demo's DSR network), and the kernel can skip a step on the device when the
    gradients are not finite (``trainers.update``), so the step needs no host sync. Elsewhere: foreach.
    """
    device = torch.device(device)
    if device.type in ("cuda", "cpu"):
        return {"fused": True}
    return {"foreach": True}


def prepare_model(model: torch.nn.Module, runtime: Runtime, log: LogFn | None = None,
                  name: str = "model") -> torch.nn.Module:
    """Apply the preset's model levers in place and return ``model`` (same object, same state_dict keys).

    ``runtime.channels_last``: parameters and buffers in channels_last (convolutions then take
    NHWC inputs without a conversion; feed batches with ``x.to(memory_format=runtime.memory_format)``).
    ``runtime.compile``: :func:`compile_or_eager`.
    """
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    if runtime.compile:
        compile_or_eager(model, log, name)
    return model


def compile_unavailable_reason(device: torch.device | str) -> str | None:
    """Why torch.compile cannot work here, found before trying (None = worth a try)."""
    device = torch.device(device)
    try:
        importlib.import_module("torch._dynamo")
    except Exception as exc:  # noqa: BLE001
        return f"torch._dynamo cannot be imported ({type(exc).__name__}: {exc})"
    if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler on PATH (inductor builds CPU kernels with one)"
    return None


def compile_or_eager(model: torch.nn.Module, log: LogFn | None = None, name: str = "model",
                     **options: Any) -> bool:
    """``torch.compile`` ``model`` in place (``Module.compile``: state_dict keys stay unprefixed).

    Compilation is lazy: it happens at the first call. A failure then (no compiler, an op dynamo
    cannot trace, an inductor error) is caught once, logged with its reason, and the model runs
    eagerly from that call on; training goes on. Returns False when compilation was ruled out at once.
    """
    say = log or (lambda message: None)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    reason = compile_unavailable_reason(device)
    if reason is not None:
        say(f"runtime.compile: {name} runs eagerly: {reason}")
        return False
    model._compiled_call_impl = _CompiledCall(model, torch.compile(model._call_impl, **options), say, name)
    return True


class _CompiledCall:
    """What ``Module.__call__`` runs for a compiled module: the compiled call, or eager after a failure.

    A deep copy (timm's EMA copies the model) gets ``None``, so the copy runs its own weights eagerly
    instead of calling the original module's compiled graph.
    """

    def __init__(self, model: torch.nn.Module, compiled: Callable[..., Any], say: LogFn, name: str):
        self.model, self.compiled, self.say, self.name = model, compiled, say, name
        self.tried = False

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.tried:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            self.model._compiled_call_impl = None
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            self.say(f"runtime.compile: {self.name} falls back to eager: {type(exc).__name__}: {first}")
            return self.model._call_impl(*args, **kwargs)
        self.tried = True
        self.say(f"runtime.compile: {self.name} compiled")
        return out
