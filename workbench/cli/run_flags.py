"""Flags shared by the training commands (--run-dir, --resume, --allow-other-data, --nproc) and the
``--nproc N`` launcher: it starts torchrun for the user, one process per device on this machine.

``check_resume`` refuses ``--resume`` of a run of another job kind (an evaluate run is not resumable)
before the job starts; ``check_data_option`` refuses a ``--data`` folder that does not exist before
an app or a server opens on it."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

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


def check_data_option(data: str | None, flag: str = "--data") -> None:
    """A ``--data`` that names no folder is an error at once (the app and ``serve`` would open on it silently)."""
    if not data:
        return
    root = Path(data).expanduser()
    try:
        if root.is_dir():
            return
        state = "is a file, not a folder" if root.exists() else "does not exist"
    except (OSError, ValueError):
        state = "is not a usable path"
    raise WorkbenchError(
        f"{flag} {data}: the dataset root {root} {state}. Give the folder that holds train_processed/, "
        "val_processed/ and test_processed/ (made by `vlr-workbench prepare SRC DST` from face photos, or "
        f"`vlr-workbench demo-data DST` for demo faces), or leave {flag} out to use the preset's data.root, else "
        "the built-in demo faces.")


def run_kind(run_dir: Path) -> str | None:
    """The job kind of a run directory: status.json, summary.json, the first metrics record, the directory
    name ``<time>-<preset>-<job>``, else an eval.json without last.pt (an evaluate run); None if unknown."""
    from engine.jobs.registry import JOBS
    from engine.runs.index import split_name
    from engine.runs.records import METRICS, first_record, read_status, read_summary

    found = [read_status(run_dir).get("job"), read_summary(run_dir).get("job"),
             first_record(run_dir / "metrics.jsonl", METRICS).get("job")]
    found.append(split_name(run_dir.name)[1])
    for kind in found:
        if isinstance(kind, str) and kind in JOBS:
            return kind
    if (run_dir / "eval.json").is_file() and not (run_dir / "last.pt").exists():
        return "evaluate"
    return None


def check_resume(resume: str | None, job: str) -> None:
    """``--resume RUN`` of a run of another kind: say which kind it is and what to do, before the job starts."""
    from engine.jobs.registry import JOBS

    path = Path(resume).expanduser() if resume else None
    if path is None or not path.is_dir():
        return  # the job says what is wrong with a missing directory
    kind = run_kind(path)
    if kind is None or kind == job:
        return
    saves = JOBS[job].resume_file
    if JOBS[kind].resume_file is None:
        raise WorkbenchError(
            f"--resume {resume}: this is {_article(kind)} {kind} run, and {kind} runs cannot be resumed ({kind} "
            f"saves no resumable state; it runs in one go, so run `vlr-workbench {kind}` again instead). "
            f"--resume of {job} takes a stopped or killed {job} run directory (runs/<time>-<preset>-{job}, "
            f"which holds {saves}).")
    raise WorkbenchError(
        f"--resume {resume}: this is {_article(kind)} {kind} run, not {_article(job)} {job} run. Continue it with "
        f"`vlr-workbench {kind} --resume {resume}`, or give --resume a {job} run directory "
        f"(runs/<time>-<preset>-{job}, which holds {saves}).")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"
