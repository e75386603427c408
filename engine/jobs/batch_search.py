"""The largest batch that fits: an opt-in search (``vlr-workbench find-batch``) that runs real
training steps of the preset's networks at growing batch sizes and backs off on out-of-memory.

Doubling from the preset's batch finds the first size that fails, then a bisection between the
last size that fitted and that one. Each try is a forward and backward pass of the job's step on
random inputs of the preset's sizes, so it measures the job's real peak. It needs a CUDA device:
on the CPU nothing runs out of memory the same way (the search would run real steps for minutes
and end at ``limit``), so :func:`require_cuda` refuses it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from engine.errors import WorkbenchError
from engine.presets import Preset
from engine.runtime import Runtime, prepare_model

from engine.jobs.options import BATCH_KEYS   # torch-free, for the CLI

TryBatch = Callable[[int], None]   # runs one step at batch n; raises torch.OutOfMemoryError when it does not fit


@dataclass(frozen=True)
class BatchSearch:
    largest: int                   # largest batch that fitted (0: not even the smallest)
    tried: dict[int, bool]         # batch -> fitted
    peak_mb: float | None          # peak device memory at ``largest`` (CUDA)


def require_cuda(runtime: Runtime, job: str) -> None:
    """Refuse the search on anything but a CUDA device, saying why and what to do instead."""
    if runtime.device.type == "cuda":
        return
    key = BATCH_KEYS.get(job, "dsr.batch_size")
    why = ("runtime.device is set to it" if torch.cuda.is_available() else "no CUDA GPU is available here")
    raise WorkbenchError(
        f"find-batch needs a CUDA GPU, but this job would run on {runtime.device} ({why}). The search measures GPU "
        "memory, growing the batch until CUDA runs out of memory; on the CPU there is no out-of-memory limit to "
        f"find, so it would only run real steps for minutes and stop at --max. Set {key} by hand instead (e.g. "
        f"`vlr-workbench presets save-as PRESET my-preset --set {key}=16`), or run find-batch on a machine with a "
        "GPU (runtime.device auto or cuda).")


def largest_batch(try_batch: TryBatch, start: int, limit: int) -> tuple[int, dict[int, bool]]:
    """(largest n <= limit for which ``try_batch(n)`` does not run out of memory, every try)."""
    tried: dict[int, bool] = {}

    def fits(n: int) -> bool:
        if n not in tried:
            try:
                try_batch(n)
                tried[n] = True
            except torch.OutOfMemoryError:
                tried[n] = False
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return tried[n]

    low, n = 0, max(1, min(start, limit))
    while fits(n):                      # grow until a size fails or the limit is reached
        low = n
        if n >= limit:
            return low, tried
        n = min(limit, n * 2)
    high = n
    while high - low > 1:               # bisect between the last fit and the first failure
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low, tried


def dsr_step(preset: Preset, runtime: Runtime) -> TryBatch:
    """One train-dsr step (DSR network and every loss term of the preset) at batch n on random images."""
    from engine.losses.combined import LossWeights, build_criterion
    from engine.losses.perceptual import load_vgg19
    from engine.models.dsr import DSRNet

    cfg, device = preset.dsr, runtime.device
    weights = LossWeights.from_config(cfg)
    recogniser = None
    if weights.needs_recogniser:
        from engine.models.edgeface import build_edgeface

        recogniser = build_edgeface(preset.runtime.edgeface_variant)   # same size as the real one
    criterion = prepare_model(build_criterion(cfg, recogniser, device,
                                              vgg=load_vgg19(cfg.vgg19_weights) if weights.needs_vgg else None),
                              runtime)
    model = prepare_model(DSRNet(preset.vlr_size, preset.data.hr_size, cfg.base_channels,
                                 cfg.residual_blocks).to(device), runtime)
    width, height = preset.vlr_size

    def step(n: int) -> None:
        vlr = torch.rand(n, 3, height, width, device=device)
        hr = torch.rand(n, 3, preset.data.hr_size, preset.data.hr_size, device=device)
        with runtime.autocast():
            loss, _ = criterion(model(vlr), hr)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def finetune_step(preset: Preset, runtime: Runtime, classes: int = 1000) -> TryBatch:
    """One stage-2 fine-tuning step (whole EdgeFace and an ArcFace head of ``classes``) at batch n."""
    from engine.models.arcface import ArcFaceHead, arcface_loss
    from engine.models.edgeface import EMBEDDING_DIM, build_edgeface, prepare_input

    device, cfg = runtime.device, preset.finetune
    model = prepare_model(build_edgeface(preset.runtime.edgeface_variant).to(device), runtime)
    head = ArcFaceHead(EMBEDDING_DIM, classes, cfg.arcface_scale, cfg.arcface_margin).to(device)

    def step(n: int) -> None:
        images = torch.rand(n, 3, 112, 112, device=device)
        labels = torch.randint(0, classes, (n,), device=device)
        with runtime.autocast():
            cos = head.cosine(model(prepare_input(images)))
        arcface_loss(head.margin_logits(cos, labels), labels, cfg.label_smoothing).backward()
        model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)

    return step


def search(preset: Preset, runtime: Runtime, job: str, limit: int) -> BatchSearch:
    """The largest batch of ``job`` ("train-dsr" or "finetune") that fits, starting at the preset's."""
    require_cuda(runtime, job)
    step = dsr_step(preset, runtime) if job == "train-dsr" else finetune_step(preset, runtime)
    start = preset.dsr.batch_size if job == "train-dsr" else preset.finetune.batch_size
    largest, tried = largest_batch(step, start, limit)
    peak = None
    if largest and runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
        step(largest)
        peak = torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return BatchSearch(largest, tried, peak)
