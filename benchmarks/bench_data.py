"""Data loading at scale: first and second start of a training job's data, and peak host memory.

    python benchmarks/bench_data.py [--pairs 20000] [--vlr 32x32] [--hr 128] [--json]

Writes a dataset of ``--pairs`` HR/VLR PNG pairs in the layout's train split (smooth random
images with noise, written by a process pool; generation time is not counted), then starts the
data loading of a training job twice, each in a fresh process (``load_split(ROOT, "train", ...)``
with the user cache directory in a temporary folder):

- **first start**: list, decode every PNG and build the memory-mapped cache of
  :mod:`engine.data.disk_cache`;
- **second start**: the same call in a new process: the cache is checked against the files'
  names, sizes and times and mapped, nothing is decoded.

Each child reports its wall time and peak RSS (``VmHWM``: pages of the mapped cache count when
touched, so the first start's peak is bounded by the cache size plus the interpreter, torch and
the decoding pool). The PNGs were just written, so the first start reads them from the OS page
cache: on a cold disk it is slower still. ``--json`` prints ``first_start_s``, ``second_start_s``,
``speedup``, ``peak_rss_mb`` (the larger of the two starts), ``cache_mb`` and the figures per start.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write_chunk(args: tuple[str, int, int, tuple[int, int], int]) -> None:
    from PIL import Image

    root, start, stop, vlr, hr = args
    hr_dir, vlr_dir = Path(root) / "train_processed" / "hr_images", Path(root) / "train_processed" / "vlr_images"
    rng = np.random.default_rng(start)
    yy, xx = np.mgrid[0:hr, 0:hr].astype(np.float32) / hr
    for i in range(start, stop):
        a, b, c = rng.uniform(40, 215, 3)
        base = np.stack([a + 40 * xx, b + 40 * yy, c - 30 * xx * yy], axis=-1)
        image = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        name = f"{i % 1000:04d}_{i:06d}.png"
        big = Image.fromarray(image)
        big.save(hr_dir / name, compress_level=1)
        big.resize(vlr, Image.BICUBIC).save(vlr_dir / name, compress_level=1)


def generate(root: Path, pairs: int, vlr: tuple[int, int], hr: int) -> float:
    for sub in ("hr_images", "vlr_images"):
        (root / "train_processed" / sub).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chunk = 500
    jobs = [(str(root), i, min(pairs, i + chunk), vlr, hr) for i in range(0, pairs, chunk)]
    with ProcessPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        list(pool.map(_write_chunk, jobs))
    return time.perf_counter() - start


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(root: str, vlr: tuple[int, int], hr: int) -> None:
    """One start, in this (fresh) process: time load_split of train and report it as JSON."""
    import torch  # noqa: F401 - imported before the clock: a job has torch loaded already

    from engine.data import load_split

    start = time.perf_counter()
    split = load_split(root, "train", vlr, hr)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "pairs": len(split), "peak_rss_mb": _peak_rss_mb()}))


def start_once(root: Path, vlr: tuple[int, int], hr: int, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(root), "--vlr", f"{vlr[0]}x{vlr[1]}",
                          "--hr", str(hr)], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the loading process failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from engine.data import parse_size

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=20000)
    ap.add_argument("--vlr", type=parse_size, default=(32, 32))
    ap.add_argument("--hr", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.vlr, args.hr)
        return

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = Path(tmp) / "data"
        generated = generate(root, args.pairs, args.vlr, args.hr)
        env = {**os.environ, "VLR_WORKBENCH_CACHE_DIR": str(Path(tmp) / "cache")}
        first = start_once(root, args.vlr, args.hr, env)
        second = start_once(root, args.vlr, args.hr, env)
        cache_bytes = sum(p.stat().st_size for p in (Path(tmp) / "cache").rglob("*.npy"))
    report = {
        "pairs": args.pairs, "vlr": f"{args.vlr[0]}x{args.vlr[1]}", "hr": args.hr,
        "generate_s": round(generated, 2),
        "first_start_s": round(first["seconds"], 3), "second_start_s": round(second["seconds"], 3),
        "speedup": round(first["seconds"] / second["seconds"], 1),
        "peak_rss_mb": round(max(first["peak_rss_mb"], second["peak_rss_mb"]), 1),
        "first_peak_rss_mb": round(first["peak_rss_mb"], 1), "second_peak_rss_mb": round(second["peak_rss_mb"], 1),
        "cache_mb": round(cache_bytes / 2**20, 1), "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.pairs} pairs (HR {args.hr}, VLR {report['vlr']}), generated in {generated:.1f} s (not counted)")
    print(f"first start  (decode + cache): {report['first_start_s']:8.2f} s, peak RSS {report['first_peak_rss_mb']:.0f} MB")
    print(f"second start (mapped cache):   {report['second_start_s']:8.2f} s, peak RSS "
          f"{report['second_peak_rss_mb']:.0f} MB")
    print(f"speedup {report['speedup']}x; decoded cache {report['cache_mb']:.0f} MB on disk")


if __name__ == "__main__":
    main()
