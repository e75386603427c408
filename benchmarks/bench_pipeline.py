"""Run the whole cpu-demo pipeline (recogniser pre-training, DSR, fine-tuning, evaluation) and print
per-stage wall time and the rank-1 figures of DSR, bicubic and HR probes.

    python benchmarks/bench_pipeline.py [--preset cpu-demo] [--data DIR] [--runs DIR] [--threads N] [--seed S]

Runs go to a temporary directory unless --runs is given. The demo data (data.root = "") is
generated in the cache on first use; that time is part of the recogniser stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine import presets as P  # noqa: E402
from engine.events import Failed, Log, Metrics  # noqa: E402
from engine.jobs.registry import JobRequest, run_job  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--data")
    parser.add_argument("--runs", help="runs directory (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the preset's)")
    parser.add_argument("--seed", type=int, help="runtime.seed (default: the preset's)")
    args = parser.parse_args()

    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    changes = {"runtime.runs_dir": str(runs)}
    if args.threads:
        changes["runtime.num_threads"] = args.threads
    if args.seed is not None:
        changes["runtime.seed"] = args.seed
    preset = P.load(args.preset).with_changes(changes)
    started = time.perf_counter()
    cpu_marks: list[tuple[str, float]] = []   # (stage, process CPU time when it was announced)

    def emit(event) -> None:
        stamp = f"[{time.perf_counter() - started:7.1f}s]"
        if isinstance(event, Log) and event.job == "pipeline" and event.message.startswith("stage "):
            cpu_marks.append((event.message.split(": ", 1)[1], time.process_time()))
        if isinstance(event, Log):
            print(stamp, event.job, event.message, flush=True)
        elif isinstance(event, Metrics) and event.split != "train":
            shown = " ".join(f"{k}={v:.4g}" for k, v in list(event.values.items())[:8])
            print(stamp, event.job, event.stage, f"epoch {event.epoch}", event.split, shown, flush=True)

    result = run_job(JobRequest("pipeline", preset, data=args.data), emit)
    wall = time.perf_counter() - started
    if isinstance(result, Failed):
        print("pipeline failed:", result.error)
        if result.traceback:
            print(result.traceback)
        return 1
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    cpu_marks.append(("end", time.process_time()))
    cpu = {name: end - start for (name, start), (_, end) in zip(cpu_marks, cpu_marks[1:])}
    print(f"\npreset {preset.name}, runs in {runs}, torch threads {torch.get_num_threads()}")
    print("  stage          wall s    CPU s (all threads; CPU s / threads ~ wall on an idle machine)")
    for stage, seconds in summary["stage_seconds"].items():
        print(f"  {stage:<11} {seconds:8.1f} {cpu.get(stage, float('nan')):8.1f}")
    print(f"  {'total':<11} {wall:8.1f} {sum(cpu.values()):8.1f}")
    for variant in ("dsr", "bicubic", "hr"):
        rank1, psnr = summary.get(f"{variant}_rank1"), summary.get(f"{variant}_psnr")
        print(f"  {variant:<8} rank-1 {'-' if rank1 is None else f'{100 * rank1:.1f}%'}"
              f"  PSNR {'-' if psnr is None else f'{psnr:.2f} dB'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
