"""Sweep controller cost: seconds between one trial's end and the next one's start, and trials per hour, on the
tiny preset with K = 1 (in-process trials) and K = 2 (``--parallel 2``: trials as CLI processes).

    python benchmarks/bench_sweep.py [--trials 6] [--epochs 3]

Each trial's start is its run's ``status.json`` ``started``, its end the last line of its metrics.jsonl;
the gap is the time the controller needs to tell the study, ask the next trial and start its job
(for K = 2 it includes the new process's start-up: interpreter, torch import, data cache open).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import presets  # noqa: E402
from engine.data.demo import generate_demo_dataset  # noqa: E402
from workbench.cli.main import main as cli  # noqa: E402

SPACE = '[params]\n"dsr.learning_rate" = { low = 5e-4, high = 3e-3, log = true }\n'


def run(work: Path, root: Path, parallel: int, trials: int, epochs: int) -> dict:
    preset = presets.load("cpu-demo").with_changes({
        "data.vlr_width": 8, "data.vlr_height": 8, "data.hr_size": 32, "dsr.base_channels": 8,
        "dsr.residual_blocks": 1, "dsr.batch_size": 8, "dsr.epochs": epochs, "dsr.warmup_epochs": 0,
        "runtime.device": "cpu", "runtime.runs_dir": str(work / f"runs-{parallel}"), "dsr.lambda_identity": 0.0,
        "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0})
    preset_file = presets.save(presets.derive(preset, "bench"), work / f"bench-{parallel}.toml")
    (work / "space.toml").write_text(SPACE)
    started = time.time()
    code = cli(["sweep", "--preset", str(preset_file), "--data", str(root), "--space", str(work / "space.toml"),
                "--trials", str(trials), "--parallel", str(parallel), "--sampler", "random", "--no-prune",
                "--study", f"bench-{parallel}"])
    wall = time.time() - started
    if code != 0:
        raise SystemExit(f"the K={parallel} sweep failed (exit {code})")
    spans = []
    for run_dir in sorted((work / f"runs-{parallel}").glob("*-train-dsr*")):
        status = json.loads((run_dir / "status.json").read_text())
        ends = [json.loads(line)["time"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        spans.append((status["started"], max(ends)))
    spans.sort()
    # K = 1: the next trial starts after the previous one ended; K = 2: a slot's next trial after its last one
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[parallel:])]
    return {"parallel": parallel, "trials": len(spans), "wall_s": round(wall, 1),
            "trials_per_hour": round(3600 * len(spans) / wall, 1),
            "gap_median_s": round(statistics.median(gaps), 2) if gaps else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        os.environ["VLR_WORKBENCH_CONFIG_DIR"] = str(work / "config")    # the best presets stay in the temp dir
        os.environ["VLR_WORKBENCH_CACHE_DIR"] = str(work / "cache")
        root = generate_demo_dataset(work / "data", identities=8, per_identity=4, seed=0, vlr_size=(8, 8),
                                     hr_size=32)
        rows = [run(work, root, k, args.trials, args.epochs) for k in (1, 2)]
    print(json.dumps(rows))
    for row in rows:
        print(f"K={row['parallel']}: {row['trials']} trials in {row['wall_s']} s ({row['trials_per_hour']} trials/h), "
              f"controller gap between a trial's end and the next start: median {row['gap_median_s']} s")


if __name__ == "__main__":
    main()
