"""Sweep controller cost: seconds between one trial's end and the next one's start, and trials per hour, on the
tiny preset with K = 1 (in-process trials) and K = 2 (``--parallel 2``: trials as CLI processes); and the
controller's own work per trial (ask + the trial's run directory and sweep.json + tell), with 1 and 3
controllers on one study, on the journal file and on PostgreSQL (issue 36's goal: < 0.2 s per trial there).

    python benchmarks/bench_sweep.py [--trials 6] [--epochs 3] [--storage URL | --postgres] [--only overhead]

``--postgres`` starts a throwaway cluster (tests/pg_server.py: PostgreSQL's initdb/pg_ctl on this machine);
``--storage URL`` uses a server of your own (an empty database: the benchmark's studies are made there). The
overhead trials run no training: each writes a one-line metrics.jsonl for its objective, so what is timed is
the storage round trips and the bookkeeping alone.

Each trial's start is its run's ``status.json`` ``started``, its end the last line of its metrics.jsonl;
the gap is the time the controller needs to tell the study, ask the next trial and start its job
(for K = 2 it includes the new process's start-up: interpreter, torch import, data cache open).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


def overhead_worker(preset_file: str, url: str, study: str, trials: int) -> None:
    """One controller's loop without training (run in its own process); prints its per-trial seconds."""
    from engine.events import Finished, ignore
    from engine.jobs.options import SweepOptions
    from engine.sweep import controllers
    from engine.sweep import study as sweeps
    from engine.sweep.space import load_space

    preset = presets.load(preset_file)
    space_file = Path(preset_file).with_name("space.toml")
    opts = SweepOptions(space=str(space_file), trials=trials, storage=url or None, study=study, sampler="random",
                        prune=False)
    space = load_space(space_file, preset)
    optuna_study = sweeps.open_study(preset, opts, space, study)
    sweeps.record_setup(optuna_study, preset, opts)
    controllers.register(optuna_study, preset.runtime.seed)
    seconds = []
    while sweeps.claimed(optuna_study) < trials:
        started = time.perf_counter()
        asked = sweeps._new_trial(optuna_study, preset, space, opts, ignore)
        if asked is None:
            break
        trial, changes, run = asked
        asked_s = time.perf_counter() - started
        (run.path / "metrics.jsonl").write_text(json.dumps({"split": "val", "epoch": 1, "psnr": 20.0 + trial.number
                                                            / 100, "time": time.time()}) + "\n")
        started = time.perf_counter()
        sweeps.tell_result(optuna_study, trial, changes, run.path, Finished("train-dsr", run.path), None, opts,
                           ignore)
        seconds.append(asked_s + time.perf_counter() - started)
    print(json.dumps(seconds))


def overhead(work: Path, storage: str, name: str, controllers: int, trials: int) -> dict:
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(work / f"runs-{name}-{controllers}")})
    preset_file = presets.save(presets.derive(preset, "bench"), work / f"overhead-{name}-{controllers}.toml")
    (work / "space.toml").write_text(SPACE)
    code = ("import sys; sys.path.insert(0, %r); import bench_sweep; bench_sweep.overhead_worker(*sys.argv[1:4], "
            "int(sys.argv[4]))" % str(Path(__file__).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    workers = [subprocess.Popen([sys.executable, "-c", code, str(preset_file), storage,
                                 f"overhead-{name}-{controllers}", str(trials)], stdout=subprocess.PIPE, text=True,
                                env=env, cwd=work) for _ in range(controllers)]
    per_trial = [s for w in workers for s in json.loads(w.communicate()[0].strip().splitlines()[-1] or "[]")]
    if any(w.returncode for w in workers) or not per_trial:
        raise SystemExit(f"the {name} overhead run with {controllers} controller(s) failed")
    return {"storage": name, "controllers": controllers, "trials": len(per_trial),
            "median_s": round(statistics.median(per_trial), 3), "max_s": round(max(per_trial), 3)}


def _postgres(work: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pg_server import Cluster, server_bin

    bin_dir = server_bin()
    if bin_dir is None:
        raise SystemExit("--postgres needs PostgreSQL's server binaries (initdb, pg_ctl): apt-get install -y "
                         "postgresql, or pass --storage URL of a server of your own")
    cluster = Cluster(bin_dir).start()
    return cluster, cluster.url(cluster.new_database())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--storage", help="a PostgreSQL URL (an empty database) for the overhead rows")
    ap.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL for the overhead rows")
    ap.add_argument("--overhead-trials", type=int, default=30, help="trials per controller in the overhead rows")
    ap.add_argument("--only", choices=("gap", "overhead"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        os.environ["VLR_WORKBENCH_CONFIG_DIR"] = str(work / "config")
        cluster = None
        storages = [("journal", "")]
        if args.postgres:
            cluster, url = _postgres(work)
            storages.append(("postgresql", url))
        elif args.storage:
            storages.append(("postgresql", args.storage))
        try:
            rows = [overhead(work, url, name, k, args.overhead_trials * k) for name, url in storages
                    for k in (1, 3)] if args.only != "gap" else []
        finally:
            if cluster is not None:
                cluster.stop()
    for row in rows:
        print(f"{row['storage']:10} {row['controllers']} controller(s): {row['trials']} trials, ask + tell + "
              f"bookkeeping per trial median {row['median_s']} s, max {row['max_s']} s"
              + (" (goal < 0.2 s)" if row["storage"] == "postgresql" else ""))
    if args.only == "overhead":
        return
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
