"""DSR figures: true parameter counts of the presets' networks and training-step throughput.

    python benchmarks/bench_dsr.py [--presets vlr-14x16 vlr-32x32 cpu-demo] [--steps 3] [--batch N]
                                   [--device cpu|cuda] [--losses l1|all]

Prints, per preset: parameters (the guide's "~2.3M -> 2.6M" is not what 128 channels x 16 blocks
hold) and measured images/s of a full training step (paired augmentation, forward, loss,
backward, clipping, AdamW, EMA) on the chosen device with the preset's AMP setting (bf16/fp16 on
CUDA). ``--losses all`` adds the recogniser terms (a random-init EdgeFace of the preset's variant)
and the perceptual term (a random-init VGG19 when the ImageNet file is absent: same cost).
Synthetic images are used: throughput does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import presets  # noqa: E402
from engine.data.augment import PairedAugment  # noqa: E402
from engine.errors import WeightsError  # noqa: E402
from engine.losses.combined import DSRCriterion, LossWeights  # noqa: E402
from engine.losses.critic import FrozenRecogniser  # noqa: E402
from engine.losses.perceptual import VGGPerceptualLoss, load_vgg19  # noqa: E402
from engine.models.dsr import DSRNet, count_trainable_parameters  # noqa: E402
from engine.models.edgeface import build_edgeface  # noqa: E402
from engine.runtime import resolve  # noqa: E402


def build_criterion(preset, losses: str, device: torch.device) -> tuple[DSRCriterion, str]:
    cfg = preset.dsr
    if losses == "l1":
        return DSRCriterion(LossWeights(l1=cfg.lambda_l1, tv=cfg.lambda_tv)), "l1+tv"
    weights = LossWeights.from_config(cfg)
    vgg, note = None, ""
    if weights.needs_vgg:
        try:
            vgg = VGGPerceptualLoss(load_vgg19(cfg.vgg19_weights))
        except WeightsError:
            import torchvision
            vgg, note = VGGPerceptualLoss(torchvision.models.vgg19(weights=None)), " (random VGG19)"
        vgg = vgg.to(device)
    critic = FrozenRecogniser(build_edgeface(preset.runtime.edgeface_variant)).to(device) \
        if weights.needs_recogniser else None
    return DSRCriterion(weights, vgg=vgg, critic=critic), f"all terms, {cfg.perceptual_network} perceptual{note}"


def bench(preset_name: str, steps: int, batch: int | None, device_name: str | None, losses: str) -> None:
    preset = presets.load(preset_name)
    if device_name:
        preset = preset.with_changes({"runtime.device": device_name})
    runtime = resolve(preset)
    device, cfg = runtime.device, preset.dsr
    batch = batch or cfg.batch_size
    model = DSRNet(preset.vlr_size, preset.data.hr_size, cfg.base_channels, cfg.residual_blocks).to(device)
    params = count_trainable_parameters(model)
    criterion, loss_note = build_criterion(preset, losses, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    from timm.utils import ModelEmaV3
    ema = ModelEmaV3(model, decay=cfg.ema_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.needs_grad_scaler)
    augment = PairedAugment.from_config(cfg)
    generator = torch.Generator().manual_seed(0)
    w, h = preset.vlr_size
    hr = torch.rand(batch, 3, preset.data.hr_size, preset.data.hr_size, device=device)
    vlr = torch.nn.functional.interpolate(hr, size=(h, w), mode="area")

    def step() -> None:
        v, t = augment(vlr, hr, generator)
        with runtime.autocast():
            loss, _ = criterion(model(v), t)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        ema.update(model)

    step()  # warm-up (allocations, cuDNN autotuning)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
    amp = str(runtime.amp_dtype).replace("torch.", "") if runtime.amp_dtype else "off"
    print(f"{preset_name:12s} VLR {w}x{h} -> {preset.data.hr_size}  channels {cfg.base_channels:3d} x blocks "
          f"{cfg.residual_blocks:2d}  x{model.factor} shuffle  parameters {params:>10,d}  | {device} AMP {amp}, "
          f"batch {batch}, {loss_note}: {steps * batch / seconds:8.2f} img/s ({seconds / steps:.3f} s/step){memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["vlr-14x16", "vlr-32x32", "cpu-demo"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, help="batch size (default: the preset's dsr.batch_size)")
    parser.add_argument("--device", help="cpu or cuda (default: the preset's runtime.device, i.e. auto)")
    parser.add_argument("--losses", choices=("l1", "all"), default="l1")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
          f"CUDA {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    for name in args.presets:
        bench(name, args.steps, args.batch, args.device, args.losses)


if __name__ == "__main__":
    main()
