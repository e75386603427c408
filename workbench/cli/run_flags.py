"""Flags shared by the training commands (--run-dir, --resume, --allow-other-data, --nproc) and the
``--nproc N`` launcher: it starts torchrun for the user, one process per device on this machine."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from engine.errors import WorkbenchError

SHUTDOWN_SECONDS = 900   # torchrun waits this long for workers to stop cleanly after Ctrl-C


def add_run_flags(parser: argparse.ArgumentParser, job: str, *, run_dir: bool = True) -> None:
    if run_dir:
        parser.add_argument("--run-dir", help=f"write the run into exactly this directory (default: a new "
                                              f"<runtime.runs_dir>/<time>-<preset>-{job})")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help=f"continue a stopped or killed {job} run where its last.pt stands, with its own preset, "
                             "data, optimiser, schedule and random state")
    parser.add_argument("--allow-other-data", action="store_true",
                        help="with --resume: continue on --data even though it differs from the run's own dataset")
    parser.add_argument("--nproc", type=_nproc, metavar="N",
                        help="train data-parallel in N processes on this machine (one per GPU; gloo on CPU): "
                             "launches torchrun --nproc_per_node N. The preset's batch size is per process.")


def _nproc(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"--nproc must be between 1 and 1024, got {value}")
    return value


def launch_torchrun(nproc: int, argv: list[str] | None = None) -> int:
    """Run this same command under ``torchrun --standalone --nproc_per_node N`` and wait for it.

    Ctrl-C reaches torchrun, which forwards it to every worker; they agree on a step, stop cleanly and
    rank 0 saves last.pt. ``--shutdown-timeout`` gives them SHUTDOWN_SECONDS for that (an epoch's
    validation and checkpoints) before torchrun kills them; this process only waits.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise WorkbenchError("--nproc was given to a process that torchrun already started; leave --nproc out "
                             "when you run torchrun yourself (e.g. for several nodes).")
    args = _without_nproc(list(sys.argv[1:] if argv is None else argv))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               f"--shutdown-timeout={SHUTDOWN_SECONDS}", "-m", "workbench.cli.main", *args]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call(command)
    finally:
        signal.signal(signal.SIGINT, previous)


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
