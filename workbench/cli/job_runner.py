"""Run an engine job in the foreground with rich progress; Ctrl-C stops it cleanly.

The first Ctrl-C sets the job's stop flag (the trainer saves a resumable checkpoint and ends);
a second one aborts at once.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine import events as ev
from engine.jobs.registry import JobRequest, StopFlag, job_spec, run_job

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # paths in errors stay unbroken


def _fmt(value) -> str:
    """A value as the CLI prints it: floats to 4 significant digits, no value (None) as "-"."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def summary_table(title: str, summary: dict) -> Table:
    """A job's summary, one key a line (nested tables and lists are in summary.json; no value: "-")."""
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        if not isinstance(value, (dict, list)):
            table.add_row(escape(str(key)), escape(_fmt(value)))
    return table


def console_progress() -> tuple[Progress, Callable[[ev.Event], None]]:
    """A rich Progress and the ``emit`` that draws a job's events on it (also used by ``attach``)."""
    progress = Progress(TextColumn("[bold]{task.fields[stage]}[/] {task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=console, transient=False)
    tasks: dict[str, int] = {}

    def emit(event: ev.Event) -> None:
        if isinstance(event, ev.Progress):
            key = f"{event.stage}:{event.epoch}"
            parts = [f"loss {_fmt(event.loss)}" if event.loss is not None else "",
                     f"{event.images_per_second:.1f} img/s" if event.images_per_second else "",
                     f"ETA {_eta(event.eta_seconds)}" if event.eta_seconds is not None and event.step < event.steps
                     else ""]   # a finished epoch shows no ETA
            info = "  ".join(p for p in parts if p)
            desc = f"epoch {event.epoch}/{event.epochs}" if event.epochs else "step"
            if key not in tasks:
                tasks[key] = progress.add_task(desc, total=event.steps, stage=event.stage, info=info)
            progress.update(tasks[key], completed=event.step, info=info)
        elif isinstance(event, ev.Metrics) and event.split != "train":
            shown = "  ".join(f"{k} {_fmt(v)}" for k, v in event.values.items())
            progress.console.print(f"[cyan]{event.stage} epoch {event.epoch} {event.split}[/]: {shown}")
        elif isinstance(event, ev.Log):
            style = {"warning": "yellow", "error": "red"}.get(event.level, "dim")
            progress.console.print(f"[{style}]{escape(event.message)}[/]")
        elif isinstance(event, ev.Samples):
            progress.console.print(f"[dim]samples: {event.path}[/]")

    return progress, emit


def run_in_foreground(request: JobRequest, on_done: Callable[[ev.Finished], None] | None = None) -> int:
    """Run ``request`` with a progress bar; exit code 0 done, 2 user error, 1 bug, 130 stopped.

    ``on_done`` gets the ``Finished`` event of a job that ran to its end (e.g. to print its results).
    """
    stop = StopFlag()
    progress, emit = console_progress()

    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            err_console.print("[yellow]stopping after this step (Ctrl-C again to abort)...[/]")
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with progress:
            result = run_job(request, emit, stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if isinstance(result, ev.Failed):
        err_console.print(f"[bold red]error:[/] {escape(result.error)}")
        if result.traceback:
            err_console.print(result.traceback, markup=False)
            return 1
        return 2
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun rank 0 reports for all
        return 0
    if result.summary:
        console.print(summary_table(f"{request.kind} summary", result.summary))
    if result.run_dir:
        console.print(f"run directory: {result.run_dir}")
    if result.stopped:
        spec = job_spec(request.kind)
        resumable = bool(spec.resume_file and result.run_dir and (Path(result.run_dir) / spec.resume_file).is_file())
        hint = (f"; {result.resume_hint}" if result.resume_hint
                else f"; continue with `vlr-workbench {request.kind} --resume {result.run_dir}`" if resumable
                else "; run the same command again to resume it" if spec.resumed_by_rerun
                else " (nothing resumable was saved)")
        console.print(f"[yellow]stopped early{escape(hint)}[/]")
        return 0 if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 130
    if on_done is not None:
        on_done(result)
    return 0
