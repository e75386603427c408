"""``vlr-workbench attach RUN_DIR`` and ``vlr-workbench stop RUN_DIR``: follow or stop a run that
another process owns (started headless, under torchrun, by the app, or before an SSH drop)."""

from __future__ import annotations

import time

from rich.markup import escape

from engine import events as ev
from engine.errors import WorkbenchError
from engine.runs.follow import RunFollower
from engine.runs.status import read_status, request_stop, run_state
from workbench.cli.job_runner import console, console_progress, err_console, summary_table

POLL_SECONDS = 1.0


def register(subparsers) -> None:
    attach = subparsers.add_parser(
        "attach", help="follow a running job from its run directory (progress, metrics, log)",
        description="Shows a job started anywhere (another terminal, torchrun, the app, before your SSH session "
                    "dropped) from its run directory: the run so far, then live progress until it ends. Ctrl-C "
                    "detaches and leaves the job running; `vlr-workbench stop RUN_DIR` stops it cleanly.")
    attach.add_argument("run_dir", metavar="RUN_DIR")
    attach.add_argument("--stop", action="store_true", help="ask the job to stop (it saves last.pt) and follow it "
                                                            "to its end")
    attach.set_defaults(func=attach_command)
    stop = subparsers.add_parser(
        "stop", help="stop a running job cleanly from any terminal (it saves a resumable last.pt)",
        description="Writes RUN_DIR/stop.request; the job that owns RUN_DIR stops after its current step, saves "
                    "last.pt and ends as 'stopped'. Resume it later with `--resume RUN_DIR`.")
    stop.add_argument("run_dir", metavar="RUN_DIR")
    stop.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                      help="wait this long for the job to end (default 60; 0 = do not wait)")
    stop.set_defaults(func=stop_command)


def _running(run_dir: str) -> None:
    state = run_state(run_dir)
    if state != "running":
        raise WorkbenchError(f"{run_dir} is not running (its state is {state}). `vlr-workbench runs` lists the "
                             "runs and their states; a stopped or dead run continues with `--resume RUN_DIR`.")


def stop_command(args) -> int:
    follower = RunFollower(args.run_dir)   # checks that it is a run directory
    _running(args.run_dir)
    request_stop(follower.root)
    status = read_status(follower.root)
    owner = f" (pid {status['pid']} on {status.get('host', '?')})" if "pid" in status else ""
    console.print(f"asked {escape(str(status.get('job', 'the job')))}{escape(owner)} to stop")
    deadline = time.time() + args.wait
    while time.time() < deadline:
        state = run_state(follower.root)
        if state != "running":
            console.print(f"{follower.root}: {state}")
            return 0
        time.sleep(POLL_SECONDS / 2)
    if args.wait:
        err_console.print(f"still running after {args.wait:g} s (a long step or validation); it stops at its next "
                          "step: `vlr-workbench runs` shows when")
    return 0


def attach_command(args) -> int:
    follower = RunFollower(args.run_dir)
    if args.stop:
        _running(args.run_dir)
        request_stop(follower.root)
    progress, emit = console_progress()
    console.print(f"attached to {escape(str(follower.root))} ({run_state(follower.root)}); Ctrl-C detaches")
    end: ev.Event | None = None
    try:
        with progress:
            while end is None:
                for event in follower.poll():
                    if isinstance(event, (ev.Finished, ev.Failed)):
                        end = event
                    else:
                        emit(event)
                if end is None:
                    time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        console.print(f"detached; the job keeps running. `vlr-workbench stop {escape(str(follower.root))}` stops it")
        return 0
    if isinstance(end, ev.Failed):
        err_console.print(f"[bold red]the run failed:[/] {escape(end.error)}")
        return 2
    if end.summary:
        console.print(summary_table(f"{end.job} summary", end.summary))
    console.print(f"run {'stopped' if end.stopped else 'finished'}: {escape(str(follower.root))}")
    return 0
