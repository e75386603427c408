"""Training-step throughput: the engine's path against the straightforward baseline, in one run.

    python benchmarks/bench_train.py [--preset P] [--steps N] [--warmup N] [--workers K]
                                     [--set section.key=value ...] [--only dsr|finetune|camera] [--no-baseline]
                                     [--no-app] [--json]

For a preset (default ``cpu-demo`` on the CPU, ``vlr-32x32`` on CUDA), on demo faces generated
into a temporary directory (generation time not counted):

- **DSR step** and **fine-tuning step** (stage 2: backbone and ArcFace head; inputs super-resolved
  by a frozen DSR network), images/s of
  - the *engine*: the trainers' own steps (``engine.train.dsr.DSRTraining.step``, built by the
    trainer's ``build_training``; ``engine.train.recognition.ArcFaceStep``) on the decoded uint8
    cache (:mod:`engine.data.disk_cache`, placed by :mod:`engine.data.placement`): batch
    augmentation on the device, the preset's runtime levers (``runtime.amp``,
    ``runtime.channels_last``, ``runtime.compile``), fused AdamW that skips non-finite steps on the
    device (no host sync in a step);
  - the *baseline*: a ``Dataset`` that opens the image files with PIL and applies per-sample
    torchvision transforms, through a ``DataLoader`` (``--workers``), fp32, no channels_last, no
    cache; the same networks, losses, clipping, EMA and schedule;
  and their ratio, the peak memory of each (CUDA: ``max_memory_allocated``, the engine's measured
  alone first and the baseline's less the engine's resident memory; CPU: the process's peak RSS,
  reset per phase where Linux allows, both paths' networks resident), and the model FLOPs per image
  (``torch.utils.flop_counter``; on CUDA also the fraction of the device's bf16 peak).
- **Camera** (``[degrade]``): the DSR step through the camera (degradation of HR on the fly, the section's
  defaults) against the same step on the cached VLR images, interleaved: ``camera.cost_fraction`` = the extra
  time per step as a fraction of the clean step (issue 34's goal: <= 0.10 on the CPU preset).
- **App overhead**: the same short ``train-dsr`` job (``APP_EPOCHS`` = 12 epochs, the preset's networks
  and losses with a random-init recogniser file) run headless (``engine.jobs.registry.run_job``) and started with
  the app's ``t`` key under Pilot, alternately (``--app-repeats`` each, default 5, the order turned
  around each repeat), each run in a fresh process;
  ``app_overhead_ratio`` = median headless img/s over median in-app img/s with the app's default
  (the job in its own process, followed by the app), ``median_pair_ratio`` the median of the
  paired ratios, ``app_cpu_percent`` the app process's own CPU time while it followed the job (per cent
  of one core: steadier than the ratio on a noisy machine); ``app_overhead_ratio_in_thread`` the same
  for jobs inside the app (``B``: the job in the app's worker thread, sharing the interpreter and the
  OpenMP runtime with the UI);
  ``app_overhead_ratio_steady``: one long headless job with the app attached to it (charts on
  screen) in every other window of 12 s, rates from the run's progress.jsonl; each window with the
  app against the mean of its neighbours without it, the median of those ratios: the app's cost in
  steady state, free of run-to-run drift and of start-up work (``--steady-windows``;
  ``--steady-only`` measures only this).

``--set`` changes the preset for both paths (e.g. ``--set runtime.amp=bf16 --set
runtime.channels_last=true`` to measure the levers, ``--set runtime.compile=true``, ``--set
dsr.batch_size=N``; the baseline always runs fp32 eager). ``--only`` measures one step kind,
``--no-baseline`` the engine alone (at a batch found by ``find-batch`` the fp32 baseline would not fit
beside it); ``engine_warmup_s`` is the time of the untimed first steps (with compile: its compile time).
``--json`` prints one object: ``{"dsr": {"engine_img_s", "baseline_img_s", "ratio", ...},
"finetune": {...}, "app_overhead_ratio": x, ...}``. Figures on a shared machine are noisy:
run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import presets  # noqa: E402
from engine.data.augment import FinetuneAugment  # noqa: E402
from engine.data import load_split  # noqa: E402
from engine.data.demo import generate_demo_dataset  # noqa: E402
from engine.data.placement import BatchFeeder, estimate_job_bytes, place_splits  # noqa: E402
from engine.errors import WeightsError  # noqa: E402
from engine.losses.combined import LossWeights, build_criterion  # noqa: E402
from engine.models.arcface import ArcFaceHead, arcface_loss  # noqa: E402
from engine.models.dsr import DSRNet  # noqa: E402
from engine.models.edgeface import EMBEDDING_DIM, build_edgeface  # noqa: E402
from engine.runtime import configure_backends, cpu_has_native_bf16, prepare_model, resolve  # noqa: E402
from engine.train.dsr import build_training  # noqa: E402
from engine.train.finetune import super_resolver  # noqa: E402
from engine.train.recognition import ArcFaceNet, ArcFaceStep, LabelledImages, arcface_optimizer  # noqa: E402
from engine.train.schedule import warmup_cosine  # noqa: E402
from engine.train.update import NonFiniteCount, OptimizerUpdate  # noqa: E402

SETTLE_SECONDS = 2.0  # the app's start-up drawing is done before the job starts
APP_EPOCHS = 12      # long enough that one-time start-up work (the app's first chart draws) is not most of it
# Dense bf16 tensor-core peaks (vendor figures, no sparsity), matched in order against the device name: the more
# specific names first ("L40S" before "L4", "H100 PCIe" before "H100" = SXM).
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12,
                   "A100": 312e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12}


# ----------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) on Linux


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_of(step: Callable[[], int], warmup: int, device: torch.device) -> float:
    """Peak memory (MB) while ``step`` runs its warm-up steps (steady state after the first)."""
    _reset_peak(device)
    for _ in range(warmup):
        step()
    _sync(device)
    return _peak_mb(device)


def interleaved(steps: dict[str, Callable[[], int]], total: int, rounds: int,
                device: torch.device) -> dict[str, float]:
    """images/s of each step, timed in alternating chunks (A B A B ...) so that a shared machine's
    changing load falls on every contender alike; ``total`` steps each, in ``rounds`` chunks."""
    images = {name: 0 for name in steps}
    seconds = {name: 0.0 for name in steps}
    chunk = max(1, total // rounds)
    for r in range(rounds):
        for name, step in (steps.items() if r % 2 == 0 else reversed(steps.items())):
            _sync(device)
            start = time.perf_counter()
            for _ in range(chunk):
                images[name] += step()
            _sync(device)
            seconds[name] += time.perf_counter() - start
    return {name: images[name] / seconds[name] for name in steps}


def flops_per_image(step: Callable[[], int]) -> float | None:
    """Model FLOPs of one training step (forward + backward) per image."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            n = step()
        return counter.get_total_flops() / n
    except Exception:  # noqa: BLE001 - an op the counter does not know: no figure, not a failed benchmark
        return None


def peak_bf16_flops(name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a device called ``name`` (torch's or NVML's name), None when unknown."""
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


# ----------------------------------------------------------------------------- shared pieces


def _vgg(preset, device):
    """The VGG19 of the perceptual loss when the preset uses it (random weights when the file is absent)."""
    if not LossWeights.from_config(preset.dsr).needs_vgg:
        return None
    from engine.losses.perceptual import load_vgg19

    try:
        return load_vgg19(preset.dsr.vgg19_weights)
    except WeightsError:
        import torchvision

        return torchvision.models.vgg19(weights=None)


def _criterion(preset, device):
    """The DSR criterion with a random-init recogniser and VGG (same cost as trained ones): both paths."""
    weights = LossWeights.from_config(preset.dsr)
    recogniser = build_edgeface(preset.runtime.edgeface_variant) if weights.needs_recogniser else None
    return build_criterion(preset.dsr, recogniser, device, vgg=_vgg(preset, device))


def _dsr_parts(preset, device, seed: int):
    """The baseline's DSR network, criterion and EMA (the engine's come from ``engine.train.dsr``)."""
    from timm.utils import ModelEmaV3

    torch.manual_seed(seed)
    cfg = preset.dsr
    criterion = _criterion(preset, device)
    model = DSRNet(preset.vlr_size, preset.data.hr_size, cfg.base_channels, cfg.residual_blocks).to(device)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema_decay > 0 else None
    if ema is not None:
        ema.module.requires_grad_(False)
    return model, criterion, ema


def _finetune_parts(preset, num_classes: int, device, seed: int):
    torch.manual_seed(seed)
    cfg, dcfg = preset.finetune, preset.dsr
    dsr = DSRNet(preset.vlr_size, preset.data.hr_size, dcfg.base_channels, dcfg.residual_blocks).to(device)
    dsr.eval().requires_grad_(False)
    model = build_edgeface(preset.runtime.edgeface_variant).to(device)
    head = ArcFaceHead(EMBEDDING_DIM, num_classes, cfg.arcface_scale, cfg.arcface_margin).to(device)
    groups = [{"params": list(model.parameters()), "lr": cfg.backbone_lr},
              {"params": list(head.parameters()), "lr": cfg.head_lr_stage2}]
    return dsr, model, head, groups


def _order(n: int, batch: int, generator: torch.Generator):
    """Endless shuffled full batches of indices (the trainers' randperm order)."""
    while True:
        for index in torch.randperm(n, generator=generator).split(batch):
            if len(index) == batch:
                yield index


# ----------------------------------------------------------------------------- the engine's path


def engine_dsr(preset, runtime, train, feeder, total_steps: int, seed: int):
    """The DSR trainer's own step (``engine.train.dsr.DSRTraining.step``), built as the trainer builds it."""
    device = runtime.device
    torch.manual_seed(seed)
    criterion = prepare_model(_criterion(preset, device), runtime, _log, "DSR criterion")
    training = build_training(preset, runtime, criterion, feeder, NonFiniteCount(device), log=_log,
                              warmup_steps=0, total_steps=total_steps)
    generator = torch.Generator().manual_seed(seed)
    order = _order(len(train), preset.dsr.batch_size, generator)
    state = {"step": 0}

    def step() -> int:
        index = next(order)
        training.step(train, index, generator, state["step"])
        state["step"] += 1
        return len(index)

    return step


def engine_finetune(preset, runtime, train, feeder, total_steps: int, seed: int):
    """The fine-tuning trainer's own step (``engine.train.recognition.ArcFaceStep``), stage 2, on the
    outputs of a frozen DSR network (``engine.train.finetune.super_resolver``)."""
    cfg, device = preset.finetune, runtime.device
    dsr, model, head, _groups = _finetune_parts(preset, train.num_subjects, device, seed)
    prepare_model(dsr, runtime, _log, "frozen DSR")
    prepare_model(model, runtime, _log, "EdgeFace")
    optimizer = arcface_optimizer(preset, "stage2", True, model, head, device)
    scheduler = warmup_cosine(optimizer, 0, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.needs_grad_scaler)
    update = OptimizerUpdate(optimizer, scaler, [*model.parameters(), *head.parameters()], 0.0,
                             NonFiniteCount(device))
    step_once = ArcFaceStep(ArcFaceNet(model, head, cfg.label_smoothing), update, scheduler,
                            FinetuneAugment.from_config(cfg), feeder, super_resolver(dsr, runtime), runtime)
    images, generator = LabelledImages(train.vlr, train.labels), torch.Generator().manual_seed(seed)
    order = _order(len(train), cfg.batch_size, generator)
    model.train()

    def step() -> int:
        index = next(order)
        step_once(images, index, generator)
        return len(index)

    return step


# ----------------------------------------------------------------------------- the straightforward baseline


class PairFiles(torch.utils.data.Dataset):
    """Opens an HR/VLR pair with PIL and applies the guide's paired augmentation per sample."""

    def __init__(self, root: Path, names: list[str], dsr_cfg):
        self.hr_dir = root / "train_processed" / "hr_images"
        self.vlr_dir = root / "train_processed" / "vlr_images"
        self.names, self.cfg = names, dsr_cfg

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        import torchvision.transforms.functional as TF
        from PIL import Image

        cfg = self.cfg
        with Image.open(self.hr_dir / self.names[i]) as h, Image.open(self.vlr_dir / self.names[i]) as v:
            hr, vlr = h.convert("RGB"), v.convert("RGB")
        if random.random() < cfg.rotation_p:
            angle = random.uniform(-cfg.rotation_degrees, cfg.rotation_degrees)
            hr = TF.rotate(hr, angle, TF.InterpolationMode.BILINEAR)
            vlr = TF.rotate(vlr, angle, TF.InterpolationMode.BILINEAR)
        if random.random() < cfg.color_jitter_p:
            b, c, s = (random.uniform(*r) for r in (cfg.brightness, cfg.contrast, cfg.saturation))
            hr = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(hr, b), c), s)
            vlr = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(vlr, b), c), s)
        return TF.to_tensor(vlr), TF.to_tensor(hr)


class VLRFiles(torch.utils.data.Dataset):
    def __init__(self, root: Path, names: list[str], labels: list[int]):
        self.vlr_dir = root / "train_processed" / "vlr_images"
        self.names, self.labels = names, labels

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        import torchvision.transforms.functional as TF
        from PIL import Image

        with Image.open(self.vlr_dir / self.names[i]) as v:
            return TF.to_tensor(v.convert("RGB")), self.labels[i]


def _endless(loader):
    while True:
        yield from loader


def _loader(dataset, batch: int, workers: int, seed: int):
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                       persistent_workers=workers > 0,
                                       generator=torch.Generator().manual_seed(seed))


def baseline_dsr(preset, device, root: Path, names: list[str], workers: int, total_steps: int, seed: int):
    cfg = preset.dsr
    model, criterion, ema = _dsr_parts(preset, device, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, 0, total_steps)
    batches = _endless(_loader(PairFiles(root, names, cfg), cfg.batch_size, workers, seed))
    state = {"step": 0}

    def step() -> int:
        vlr, hr = next(batches)
        vlr, hr = vlr.to(device), hr.to(device)
        sr = model(vlr)
        loss, _terms = criterion(sr, hr)
        optimizer.zero_grad()
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        if ema is not None:
            ema.update(model, step=state["step"])
        return vlr.shape[0]

    return step


def baseline_finetune(preset, device, root: Path, train, workers: int, total_steps: int, seed: int):
    from torchvision.transforms import v2

    cfg = preset.finetune
    dsr, model, head, groups = _finetune_parts(preset, train.num_subjects, device, seed)
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, 0, total_steps)
    per_sample = v2.Compose([
        v2.Resize((112, 112), antialias=True),
        v2.RandomHorizontalFlip(cfg.flip_p),
        v2.ColorJitter(cfg.jitter_brightness, cfg.jitter_contrast, cfg.jitter_saturation, cfg.jitter_hue),
        v2.RandomRotation(cfg.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR),
        v2.Normalize([0.5] * 3, [0.5] * 3),
    ])
    batches = _endless(_loader(VLRFiles(root, train.names, train.labels.tolist()), cfg.batch_size, workers, seed))
    model.train()

    def step() -> int:
        vlr, labels = next(batches)
        vlr, labels = vlr.to(device), labels.to(device)
        with torch.no_grad():
            sr = dsr(vlr).clamp(0.0, 1.0)
        images = torch.stack([per_sample(image) for image in sr])
        cos = head.cosine(model(images))
        loss = arcface_loss(head.margin_logits(cos, labels), labels, cfg.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        return vlr.shape[0]

    return step


# ----------------------------------------------------------------------------- app overhead


def app_job_preset(preset, work: Path) -> Path:
    """The app-overhead job: the preset's networks and losses with a random-init recogniser file, APP_EPOCHS."""
    weights = work / "recogniser.pt"
    torch.save(build_edgeface(preset.runtime.edgeface_variant).state_dict(), weights)
    job_preset = preset.with_changes({"dsr.epochs": APP_EPOCHS, "dsr.warmup_epochs": 0,
                                      "runtime.edgeface_weights": str(weights), "runtime.runs_dir": str(work / "runs")})
    return presets.save(job_preset, work / "app-job.toml", overwrite=True)


def app_overhead(preset, root: Path, work: Path, repeats: int = 5) -> dict[str, Any]:
    """The same train-dsr job headless and in the app (Pilot); median img/s of ``repeats`` each.

    Each run is a fresh process, as a user's would be: this benchmark's own process has run torch
    work on its main thread, and a job then run in a worker thread of the same process pays an
    OpenMP penalty (two thread teams on two cores: up to 0.76x) that the real app does not.
    """
    preset_file = app_job_preset(preset, work)
    runs: dict[str, list[float]] = {"headless": [], "app": [], "app-thread": []}
    app_cpu: list[float] = []
    for repeat in range(repeats):     # the order turns around each repeat, so a drift of the machine is shared
        for mode in list(runs)[::-1 if repeat % 2 else 1]:
            rate, cpu = _probe(mode, preset_file, root)
            runs[mode].append(rate)
            if mode == "app":
                app_cpu.append(cpu)
    headless, in_app, in_thread = runs["headless"], runs["app"], runs["app-thread"]
    pairs = sorted(h / a for h, a in zip(headless, in_app))
    median = statistics.median
    return {"headless_img_s": median(headless), "in_app_img_s": median(in_app),
            "app_overhead_ratio": median(headless) / median(in_app), "median_pair_ratio": pairs[len(pairs) // 2],
            "in_thread_img_s": median(in_thread), "app_overhead_ratio_in_thread": median(headless) / median(in_thread),
            "job": f"train-dsr, {APP_EPOCHS} epochs, each run in a fresh process; medians of {repeats} runs",
            "app_cpu_percent": median(app_cpu), "headless_runs": headless, "in_app_runs": in_app,
            "in_thread_runs": in_thread}


def _probe(mode: str, preset_file: Path, root: Path) -> tuple[float, float]:
    """(img/s of one job run headless or in the app, in a fresh Python process; the app process's CPU time
    while the job ran, in per cent of one core: 0 headless)."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--probe", mode, str(preset_file), str(root)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{mode} probe failed: {out.stderr[-2000:]}")
    rate, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu)


STEADY_WINDOW_S = 12.0   # each window of the steady-state measurement (the app's start-up excluded)


def app_overhead_steady(preset, root: Path, work: Path, windows: int = 12) -> dict[str, Any]:
    """The app's cost in steady state: one long headless train-dsr in its own process, and the app (under
    Pilot) attached to it during every other window of STEADY_WINDOW_S seconds, charts on screen. Rates
    come from the run's progress.jsonl (training steps only), so the machine's drift falls on both alike;
    the ratio is mean rate without the app over mean rate with it."""
    import subprocess

    job_preset = presets.load(app_job_preset(preset, work)).with_changes({"dsr.epochs": 10_000})
    preset_file = presets.save(job_preset, work / "steady-job.toml", overwrite=True)
    run_dir = work / "steady-run"
    job = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", "train-dsr", "--preset", str(preset_file),
                            "--data", str(root), "--run-dir", str(run_dir)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
    spans: list[tuple[bool, float, float]] = []
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "progress.jsonl").is_file():
            if job.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the steady-state job did not start (exit code {job.poll()})")
            time.sleep(0.5)
        time.sleep(3.0)
        for window in range(windows):
            app = None
            if window % 2:
                app = subprocess.Popen([sys.executable, __file__, "--probe", "app-attach", str(run_dir), str(root)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(5.0)                     # its start-up is not steady state
            start = time.time()
            time.sleep(STEADY_WINDOW_S)
            spans.append((app is not None, start, time.time()))
            if app is not None:
                app.kill()
                app.wait()
                time.sleep(1.0)
    finally:
        job.kill()
        job.wait()
    records = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines() if line.strip()]

    def rate(start: float, end: float) -> float:
        inside = [r for r in records if start <= r["time"] <= end]
        images = seconds = 0.0
        for a, b in zip(inside, inside[1:]):
            if a["epoch"] == b["epoch"] and b["step"] > a["step"]:   # validation time is not training time
                images += (b["global_step"] - a["global_step"]) * preset.dsr.batch_size
                seconds += b["time"] - a["time"]
        return images / seconds if seconds else float("nan")

    rates = [rate(a, b) for _, a, b in spans]
    # each window with the app against the mean of the windows without it on either side: drift cancels
    paired = [statistics.mean([rates[j] for j in (i - 1, i + 1) if 0 <= j < len(spans) and not spans[j][0]])
              / rates[i] for i, (on, _, _) in enumerate(spans) if on]
    return {"steady_without_app_img_s": [r for (on, _, _), r in zip(spans, rates) if not on],
            "steady_with_app_img_s": [r for (on, _, _), r in zip(spans, rates) if on],
            "steady_window_ratios": paired, "app_overhead_ratio_steady": statistics.median(paired)}


async def _attached_app(run_dir: Path, root: Path) -> None:
    """The app attached to ``run_dir`` (the Runs tab's ``a``), charts on screen, until killed."""
    from workbench.app import messages as msg
    from workbench.app.app import WorkbenchApp

    app = WorkbenchApp(presets.load(run_dir / "preset.toml"), data=str(root), cursor_blink=False, remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(SETTLE_SECONDS)
        app.main.post_message(msg.AttachRequested(run_dir))     # what the Runs tab's a posts
        await asyncio.sleep(3600)


def _run_probe(mode: str, preset_file: str, root: str) -> tuple[float, float]:
    from engine.events import Finished
    from engine.jobs.registry import JobRequest, run_job

    if mode == "app-attach":   # preset_file is the run directory here
        asyncio.run(_attached_app(Path(preset_file), Path(root)))
        return 0.0, 0.0
    preset = presets.load(preset_file)
    if mode.startswith("app"):
        return asyncio.run(_in_app(preset, Path(root), in_thread=mode == "app-thread"))
    result = run_job(JobRequest("train-dsr", preset, data=root), lambda event: None)
    if not isinstance(result, Finished):
        raise SystemExit(f"headless train-dsr failed: {result}")
    return float(result.summary["images_per_second"]), 0.0


async def _in_app(preset, root: Path, in_thread: bool = False) -> tuple[float, float]:
    """(img/s of train-dsr started with the app's `t` key, the app process's CPU per cent of one core from the
    key to the job's end): as its own process the app follows from its run directory (the app's default), or
    (``in_thread``, the `B` toggle) in the app's worker thread (the CPU figure then includes the job's)."""
    from workbench.app.app import WorkbenchApp
    from workbench.app.messages import JobFailed, JobFinished

    app = WorkbenchApp(preset, data=str(root), cursor_blink=False, remember=False)
    ended: list = []
    done = asyncio.Event()

    clock: list[tuple[float, float]] = []    # (CPU time of this process, wall time) at t and at the end

    def hook(message) -> None:  # cheaper than scanning every message the app saw
        if isinstance(message, (JobFinished, JobFailed)):
            clock.append((time.process_time(), time.monotonic()))
            ended.append(message)
            done.set()

    async with app.run_test(size=(120, 40), message_hook=hook) as pilot:
        await pilot.pause(SETTLE_SECONDS)  # the first screen is drawn, as when a user presses t
        if in_thread:
            await pilot.press("B")
        clock.append((time.process_time(), time.monotonic()))
        await pilot.press("t")
        try:   # wait without waking the app (Pilot.pause would, and a user's terminal does not)
            await asyncio.wait_for(done.wait(), timeout=1800)
        except asyncio.TimeoutError:
            raise SystemExit("the in-app job did not finish in 30 minutes") from None
    if isinstance(ended[0], JobFailed):
        raise SystemExit(f"in-app train-dsr failed: {ended[0].event.error}")
    (cpu0, wall0), (cpu1, wall1) = clock[0], clock[-1]
    return float(ended[0].event.summary["images_per_second"]), 100 * (cpu1 - cpu0) / (wall1 - wall0)


# ----------------------------------------------------------------------------- main


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _parse_set(items: list[str]) -> dict[str, Any]:
    changes = {}
    for item in items:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"--set {item!r}: expected section.key=value")
        changes[key.strip()] = _value(value.strip())
    return changes


def _value(text: str) -> Any:
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text.strip('"')


def _pair(engine: dict, baseline: dict | None, flops: float | None, device: torch.device) -> dict[str, Any]:
    out = {"engine_img_s": round(engine["img_s"], 2), "engine_peak_mb": round(engine["peak_mb"], 1),
           "engine_warmup_s": round(engine["warmup_s"], 2), "flops_per_image": flops}
    if baseline is not None:
        out.update(baseline_img_s=round(baseline["img_s"], 2), ratio=round(engine["img_s"] / baseline["img_s"], 3),
                   baseline_peak_mb=round(baseline["peak_mb"], 1))
    peak = device_peak_flops(device)
    if flops and peak:
        out["engine_fraction_of_peak"] = round(flops * engine["img_s"] / peak, 4)
    return out


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="default: cpu-demo on the CPU, vlr-32x32 on CUDA")
    ap.add_argument("--steps", type=int, default=24, help="timed steps per path and step kind")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps each (peak memory is read over them)")
    ap.add_argument("--rounds", type=int, default=4, help="alternating timed chunks (A B B A ...)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="baseline DataLoader workers")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="preset change (both paths), e.g. dsr.batch_size=64 or runtime.compile=true")
    ap.add_argument("--only", choices=("dsr", "finetune", "camera"), help="measure one step kind only")
    ap.add_argument("--no-baseline", action="store_true",
                    help="the engine's path alone (e.g. at a batch the fp32 baseline cannot fit beside it)")
    ap.add_argument("--no-app", action="store_true", help="skip the app-overhead measurement")
    ap.add_argument("--app-only", action="store_true", help="only the app-overhead measurement")
    ap.add_argument("--steady-only", action="store_true", help="only the steady-state app-overhead measurement")
    ap.add_argument("--app-repeats", type=int, default=5, help="headless and in-app runs each, alternating")
    ap.add_argument("--steady-windows", type=int, default=12,
                    help="windows of the steady-state app measurement (every other one with the app; 0 = skip)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--probe", nargs=3, metavar=("MODE", "PRESET", "DATA"), help=argparse.SUPPRESS)
    return ap.parse_args()


def _measure(name: str, make_engine, make_baseline, args, device: torch.device, compiled: bool) -> dict[str, Any]:
    """One step kind: the engine's peak alone, then both paths timed interleaved (or the engine alone)."""
    steps = {"engine": make_engine()}
    start = time.perf_counter()
    peaks = {"engine": peak_of(steps["engine"], args.warmup, device)}  # alone: the job's own peak
    warmup_s = time.perf_counter() - start                               # with compile: the compile time
    resident = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    if make_baseline is not None:
        steps["baseline"] = make_baseline()
        peaks["baseline"] = peak_of(steps["baseline"], args.warmup, device) - resident
    rates = interleaved(steps, args.steps, args.rounds, device)
    flops = flops_per_image(steps["engine"]) if not compiled else None
    engine = {"img_s": rates["engine"], "peak_mb": peaks["engine"], "warmup_s": warmup_s}
    baseline = {"img_s": rates["baseline"], "peak_mb": peaks["baseline"]} if make_baseline is not None else None
    del steps
    gc.collect()                       # the step objects hold networks and batches: free them before the next kind
    if device.type == "cuda":
        torch.cuda.empty_cache()
    result = _pair(engine, baseline, flops, device)
    versus = f", baseline {baseline['img_s']:.1f} img/s, ratio {result['ratio']:.2f}" if baseline else ""
    _log(f"{name}: engine {engine['img_s']:.1f} img/s{versus}")
    return result


def camera_cost(preset, runtime, train, feeder, total: int, seed: int, args) -> dict[str, Any]:
    """The [degrade] camera's share of a DSR step: the trainer's step with the camera (HR -> VLR on the fly, the
    section's defaults) against the same step on the cached VLR images, interleaved."""
    camera = preset.with_changes({"degrade.enabled": True}) if not preset.degrade.enabled else preset
    clean = preset.with_changes({"degrade.enabled": False})
    steps = {"clean": engine_dsr(clean, runtime, train, feeder, total, seed),
             "camera": engine_dsr(camera, runtime, train, feeder, total, seed)}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    rates = interleaved(steps, args.steps, args.rounds, runtime.device)
    cost = rates["clean"] / rates["camera"] - 1.0           # extra time per step, as a fraction of a clean step
    _log(f"camera: clean {rates['clean']:.1f} img/s, with the camera {rates['camera']:.1f} img/s: +{100 * cost:.1f}%")
    return {"clean_img_s": round(rates["clean"], 2), "camera_img_s": round(rates["camera"], 2),
            "cost_fraction": round(cost, 4), "spec": _camera_spec(camera)}


def _camera_spec(preset) -> str:
    from engine.data.camera import camera_from_config

    return camera_from_config(preset.degrade).to_spec()


def _check_batches(preset, train_images: int, only: str | None) -> None:
    """Each timed step takes a full batch of distinct images: a training split smaller than the batch never
    yields one (the bench would wait forever), so say which figure to raise."""
    for name, batch in (("dsr", preset.dsr.batch_size), ("finetune", preset.finetune.batch_size)):
        if only in (None, name) and batch > train_images:
            raise SystemExit(f"{name} batch {batch} is larger than the {train_images} training images of the demo "
                             f"data: raise data.demo_identities (--set data.demo_identities=N) or lower the batch")


def _header(preset, runtime, args) -> dict[str, Any]:
    device = runtime.device
    report: dict[str, Any] = {"preset": preset.name, "device": str(device), "threads": torch.get_num_threads(),
                              "amp": str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else "off",
                              "channels_last": runtime.channels_last, "compile": runtime.compile,
                              "dsr_batch": preset.dsr.batch_size, "finetune_batch": preset.finetune.batch_size,
                              "baseline_workers": None if args.no_baseline else args.workers, "steps": args.steps}
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
    else:
        report["cpu_native_bf16"] = cpu_has_native_bf16()
    return report


def _steps_and_app(preset, runtime, args, work: Path, report: dict[str, Any]) -> None:
    """Demo data, the step measurements and the app overhead, into ``report``."""
    device, seed, total = runtime.device, preset.runtime.seed, args.steps + args.warmup + 2
    os.environ["VLR_WORKBENCH_CACHE_DIR"] = str(work / "cache")
    root = generate_demo_dataset(work / "data", identities=preset.data.demo_identities,
                                 per_identity=preset.data.demo_per_identity, seed=preset.data.demo_seed,
                                 vlr_size=preset.vlr_size, hr_size=preset.data.hr_size)
    train = load_split(root, "train", preset.vlr_size, preset.data.hr_size, log=_log)
    measure_steps = not (args.app_only or args.steady_only)
    if measure_steps:
        _check_batches(preset, len(train), args.only)
    (train,), placement = place_splits([train], device, job_bytes=estimate_job_bytes(preset.dsr.batch_size),
                                       on_device=preset.data.cache_on_device, log=_log)
    feeder = BatchFeeder(device)
    report.update(train_images=len(train), placement=placement)
    _log(f"{len(train)} training pairs; {report['threads']} torch threads on {device}")
    kinds = {"dsr": (lambda: engine_dsr(preset, runtime, train, feeder, total, seed),
                     lambda: baseline_dsr(preset, device, root, train.names, args.workers, total, seed)),
             "finetune": (lambda: engine_finetune(preset, runtime, train, feeder, total, seed),
                          lambda: baseline_finetune(preset, device, root, train, args.workers, total, seed))}
    for name, (make_engine, make_baseline) in kinds.items():
        if measure_steps and args.only in (None, name):
            report[name] = _measure(name, make_engine, None if args.no_baseline else make_baseline, args, device,
                                    runtime.compile)
    if measure_steps and args.only in (None, "camera"):
        report["camera"] = camera_cost(preset, runtime, train, feeder, total, seed, args)
    if not args.no_app and not args.steady_only:
        with contextlib.redirect_stdout(io.StringIO()):
            app = app_overhead(preset, root, work, args.app_repeats)
        report["app"] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in app.items()}
        report["app_overhead_ratio"] = round(app["app_overhead_ratio"], 3)
        report["app_overhead_ratio_in_thread"] = round(app["app_overhead_ratio_in_thread"], 3)
    if not args.no_app and args.steady_windows:
        steady = app_overhead_steady(preset, root, work, args.steady_windows)
        report.setdefault("app", {}).update({k: [round(x, 3) for x in v] if isinstance(v, list) else round(v, 3)
                                             for k, v in steady.items()})
        report["app_overhead_ratio_steady"] = round(steady["app_overhead_ratio_steady"], 3)


def _print_report(report: dict[str, Any], runtime) -> None:
    print(f"preset {report['preset']} on {report['device']} ({report['threads']} threads), AMP {report['amp']}, "
          f"channels_last {report['channels_last']}, compile {report['compile']}; cache placement "
          f"{report['placement']}")
    for name in [n for n in ("dsr", "finetune") if n in report]:
        r = report[name]
        flops = f", {r['flops_per_image'] / 1e9:.2f} GFLOP/image" if r.get("flops_per_image") else ""
        frac = f" ({100 * r['engine_fraction_of_peak']:.1f}% of peak)" if "engine_fraction_of_peak" in r else ""
        versus = (f"   baseline {r['baseline_img_s']:8.1f} img/s   ratio {r['ratio']:.2f}   peak "
                  f"{r['engine_peak_mb']:.0f} / {r['baseline_peak_mb']:.0f} MB" if "ratio" in r
                  else f"   peak {r['engine_peak_mb']:.0f} MB")
        print(f"{name:9s} engine {r['engine_img_s']:8.1f} img/s{versus}{flops}{frac}")
    if "camera" in report:
        c = report["camera"]
        print(f"camera    DSR step {c['clean_img_s']:.1f} img/s clean, {c['camera_img_s']:.1f} img/s through the camera "
              f"({c['spec']}): +{100 * c['cost_fraction']:.1f}% per step (goal <= 10%)")
    if "app_overhead_ratio" in report:
        a = report["app"]
        print(f"app       headless {a['headless_img_s']:.1f} img/s, in the app {a['in_app_img_s']:.1f} img/s "
              f"(own process; the app used {a['app_cpu_percent']:.1f}% of one core): overhead ratio "
              f"{report['app_overhead_ratio']:.3f}; inside the app (B) "
              f"{a['in_thread_img_s']:.1f} img/s: ratio {report['app_overhead_ratio_in_thread']:.3f}")
    if "app_overhead_ratio_steady" in report:
        print(f"app       steady state (the app attached to a running job, every other {STEADY_WINDOW_S:.0f} s "
              f"window): ratio {report['app_overhead_ratio_steady']:.3f} (median of "
              f"{', '.join(f'{r:.3f}' for r in report['app']['steady_window_ratios'])})")
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB")
    if report.get("cpu_native_bf16") and runtime.amp_dtype is None:
        print("this CPU computes bf16 natively: try --set runtime.amp=bf16 --set runtime.channels_last=true")


def main() -> None:
    args = _args()
    if args.probe:   # one side of the app-overhead measurement, in its own process
        print(*_run_probe(*args.probe))
        return
    preset = presets.load(args.preset or ("vlr-32x32" if torch.cuda.is_available() else "cpu-demo"))
    if args.set:
        preset = preset.with_changes(_parse_set(args.set))
    runtime = resolve(preset)
    configure_backends(runtime)
    report = _header(preset, runtime, args)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        _steps_and_app(preset, runtime, args, Path(tmp), report)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report, runtime)


if __name__ == "__main__":
    main()
