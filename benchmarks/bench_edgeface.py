"""EdgeFace speed: forward (inference) and forward+backward (training) images/s per variant, plus the
fine-tuning augmentation's cost, measured on this machine.

    python benchmarks/bench_edgeface.py [--variants edgeface_xxs,edgeface_xs_gamma_06] [--batch 28]
                                        [--repeats 5] [--device cpu|cuda] [--threads N] [--amp bf16|fp16]

Each figure is the median of ``--repeats`` timed batches after one warm-up batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.models.arcface import ArcFaceHead, arcface_loss  # noqa: E402
from engine.models.edgeface import VARIANTS, build_edgeface, count_all_parameters  # noqa: E402
from engine.data.augment import FinetuneAugment  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autocast(device: torch.device, amp: str | None):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def bench_variant(variant: str, batch: int, repeats: int, device: torch.device, amp: str | None) -> dict:
    model = build_edgeface(variant).to(device)
    head = ArcFaceHead(512, 100).to(device)
    x = torch.rand(batch, 3, 112, 112, device=device) * 2 - 1
    labels = torch.randint(0, 100, (batch,), device=device)

    @torch.no_grad()
    def forward():
        with autocast(device, amp):
            model.eval()(x)

    def train_step():
        model.train()
        with autocast(device, amp):
            loss = arcface_loss(head(model(x), labels), labels, 0.08)
        loss.backward()
        model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)

    def features():
        with torch.no_grad(), autocast(device, amp):
            model.eval().features(x)

    return {"variant": variant, "params": count_all_parameters(model),
            "forward": batch / timed(forward, repeats, device),
            "features": batch / timed(features, repeats, device),
            "train": batch / timed(train_step, repeats, device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--amp", choices=("bf16", "fp16"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"EdgeFace speed on {name}, batch {args.batch}, 112x112, AMP {args.amp or 'off'}, torch {torch.__version__}")
    print(f"{'variant':<22}{'params':>12}{'forward img/s':>16}{'features img/s':>16}{'fwd+bwd img/s':>16}")
    for variant in args.variants.split(","):
        r = bench_variant(variant.strip(), args.batch, args.repeats, device, args.amp)
        print(f"{r['variant']:<22}{r['params']:>12,}{r['forward']:>16.1f}{r['features']:>16.1f}{r['train']:>16.1f}")

    images = torch.rand(args.batch, 3, 112, 112, device=device)
    generator = torch.Generator().manual_seed(0)
    print(f"fine-tuning augmentation per batch of {args.batch} at 112x112:")
    for label, augment in (("flip+jitter+rotation", FinetuneAugment(0.5, 0.07, 0.07, 0.05, 0.0, 5.0)),
                           ("hue only (adjust_hue)", FinetuneAugment(hue=0.02)),
                           ("all (the guide's)", FinetuneAugment(0.5, 0.07, 0.07, 0.05, 0.02, 5.0))):
        seconds = timed(lambda: augment(images, generator), args.repeats, device)
        print(f"  {label:<24}{seconds * 1000:8.1f} ms  ({args.batch / seconds:8.1f} img/s)")


if __name__ == "__main__":
    main()
