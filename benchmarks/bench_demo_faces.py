"""Demo-face figures: generation speed and the HR-vs-bicubic identity gap seen by a tiny CNN trained
on the HR training identities (data loading at scale: bench_data.py).

    python benchmarks/bench_demo_faces.py [--identities 40] [--per-identity 10] [--vlr 16x16] [--seed 0]
                                    [--cnn-epochs 20] [--no-cnn]

The CNN (4 conv layers, cosine-softmax head, 64x64 input) is trained on the train+val HR images,
then ranks each test probe against one HR gallery image per unseen identity, once with the HR
probe and once with the bicubic-upscaled VLR probe.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import generate_demo_dataset, load_split, parse_size, to_float  # noqa: E402


def tiny_cnn(embedding: int = 64) -> nn.Module:
    layers, width = [], 3
    for out in (16, 32, 64):
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
        width = out
    layers += [nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
               nn.Flatten(), nn.Linear(256, embedding)]
    return nn.Sequential(*layers)


def cnn_gap(root: Path, vlr: tuple[int, int], epochs: int, seed: int) -> dict[str, float]:
    splits = {s: load_split(root, s, vlr) for s in ("train", "val", "test")}

    def shrink(images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)

    x = shrink(torch.cat([to_float(splits[s].hr) for s in ("train", "val")]))
    y = torch.cat([splits[s].labels for s in ("train", "val")])
    torch.manual_seed(seed)
    net, head = tiny_cnn(), nn.Linear(64, int(y.max()) + 1, bias=False)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], 3e-3)
    steps = epochs * ((len(x) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(32):
            xb = x[idx] * torch.empty(len(idx), 1, 1, 1).uniform_(0.8, 1.2)
            dy, dx = torch.randint(-2, 3, (2,)).tolist()
            logits = 16 * F.normalize(net(torch.roll(xb, (dy, dx), (2, 3))), dim=1) @ F.normalize(head.weight, dim=1).T
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    test = splits["test"]
    hr = to_float(test.hr)
    bicubic = F.interpolate(to_float(test.vlr), size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    first: dict[int, int] = {}
    for i, label in enumerate(test.labels.tolist()):
        first.setdefault(label, i)
    gallery = torch.tensor(list(first.values()))
    probes = torch.tensor([i for i in range(len(test)) if i not in set(first.values())])
    with torch.no_grad():
        g = F.normalize(net(shrink(hr[gallery])), dim=1)
        out = {"chance": 1 / len(gallery)}
        for name, images in (("hr", hr), ("bicubic", bicubic)):
            pred = test.labels[gallery][(F.normalize(net(shrink(images[probes])), dim=1) @ g.T).argmax(1)]
            out[name] = float((pred == test.labels[probes]).float().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=40)
    ap.add_argument("--per-identity", type=int, default=10)
    ap.add_argument("--vlr", type=parse_size, default=(16, 16))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cnn-epochs", type=int, default=20)
    ap.add_argument("--no-cnn", action="store_true")
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        n = args.identities * args.per_identity
        t = time.perf_counter()
        generate_demo_dataset(root, identities=args.identities, per_identity=args.per_identity, seed=args.seed,
                              vlr_size=args.vlr)
        dt = time.perf_counter() - t
        print(f"generate {args.identities}x{args.per_identity} (VLR {args.vlr[0]}x{args.vlr[1]}): {dt:.2f} s, "
              f"{n / dt:.0f} images/s")
        if not args.no_cnn:
            t = time.perf_counter()
            gap = cnn_gap(root, args.vlr, args.cnn_epochs, args.seed)
            print(f"tiny CNN rank-1 on unseen identities: HR {gap['hr']:.3f}, bicubic {gap['bicubic']:.3f}, "
                  f"chance {gap['chance']:.3f} ({time.perf_counter() - t:.1f} s incl. training)")


if __name__ == "__main__":
    main()
