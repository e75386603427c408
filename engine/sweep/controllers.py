"""The controllers of a study: each registers in the study and draws its own sampler seed.

A study's first controller seeds its sampler with ``runtime.seed`` (or ``--seed``): one controller alone is
reproducible. Every later one (a second machine joining, the same command run again to resume) gets the
seed of its rank, so that it draws new points instead of replaying the first controller's (issue 36). The
rank is a controller's place among the registrations the study holds once its own is written, in the order
they were written (write first, then read: two controllers starting together still get two ranks).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

PREFIX = "controller:"
SEED_STRIDE = 7919       # a prime: the seeds of ranks 0, 1, 2, ... never meet for any base seed below it


def controller_seed(base: int, rank: int) -> int:
    return base if rank == 0 else (base + SEED_STRIDE * rank) % (2 ** 31)


def this_controller() -> dict:
    """This process as a trial records its controller: host and pid."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def register(study, base_seed: int, own_seed: bool = True) -> tuple[int, int]:
    """Write this controller into ``study`` and return (its rank, its sampler seed). ``own_seed`` False (the grid
    sampler: its seed orders the grid's points, which every controller must number alike; it draws unvisited
    points anyway): every rank keeps ``base_seed``."""
    key = f"{PREFIX}{uuid.uuid4().hex[:12]}"
    study.set_user_attr(key, {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time(),
                              "base_seed": base_seed})
    ranked = sorted(((value.get("at", 0.0), name) for name, value in study.user_attrs.items()
                     if name.startswith(PREFIX) and isinstance(value, dict)))
    rank = [name for _at, name in ranked].index(key)
    seed = controller_seed(base_seed, rank) if own_seed else base_seed
    study.set_user_attr(key, {**study.user_attrs[key], "rank": rank, "seed": seed})
    return rank, seed


def registered(study) -> list[dict]:
    """Every controller the study has seen, in rank order (for ``sweep show`` and reports)."""
    entries = [value for name, value in study.user_attrs.items() if name.startswith(PREFIX) and isinstance(value, dict)]
    return sorted(entries, key=lambda value: value.get("at", 0.0))
