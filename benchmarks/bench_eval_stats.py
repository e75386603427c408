"""The cost of the evaluation's intervals: subject-bootstrap intervals of every row metric and the paired
rank-1 difference, for synthetic similarity matrices of growing size.

    python benchmarks/bench_eval_stats.py [--resamples 1000] [--repeats 3]

Prints, per size, the median seconds of ``row_intervals`` + ``paired_difference`` over ``--repeats``
runs (the goal: well under a second for a thousand resamples of hundreds of probes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluation import metrics, stats  # noqa: E402

FAR = {"tar_at_far_1e-2": 1e-2, "tar_at_far_1e-1": 1e-1}


def synthetic(subjects: int, per_subject: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(subjects).repeat_interleave(per_subject)
    sim = torch.rand(len(labels), subjects, generator=g)
    sim[torch.arange(len(labels)), labels] += 0.35 * torch.rand(len(labels), generator=g)
    return (sim * 20).round() / 20, labels, torch.arange(subjects)


def seconds(subjects: int, per_subject: int, resamples: int) -> float:
    sim, labels, gallery = synthetic(subjects, per_subject)
    genuine = labels[:, None] == gallery[None, :]
    ranks = metrics.probe_ranks(sim, labels, gallery)
    started = time.perf_counter()
    weights = stats.subject_weights(labels, resamples, seed=0)
    stats.row_intervals(sim, ranks, genuine, weights, FAR)
    stats.paired_difference(ranks == 1, ranks <= 2, weights)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds(20, 3, 10)                      # warm-up: first calls pay for imports and allocator growth
    print(f"{'probes':>7} {'subjects':>8} {'resamples':>9} {'seconds':>8}")
    for subjects, per_subject in ((60, 5), (200, 5), (1000, 3)):
        median = statistics.median(seconds(subjects, per_subject, args.resamples) for _ in range(args.repeats))
        print(f"{subjects * per_subject:>7} {subjects:>8} {args.resamples:>9} {median:>8.3f}")


if __name__ == "__main__":
    main()
