"""Start a job as a separate process that is followed from its run directory: the app's own-process jobs
(they outlive the app and a closed browser tab under ``serve``) and a sweep's parallel trials.

The process runs the headless CLI (``python -m workbench.cli.main JOB --preset FILE --run-dir DIR``)
in a session of its own (``start_new_session``), so no hang-up, Ctrl-C or closed tab reaches it.
The preset, saved or not, is written to FILE first: the process runs exactly what the caller holds.
The job gets a run directory chosen here, or the one given (FILE is its ``preset.toml``, the
process's output its ``detached.log``). It is followed with ``engine.runs.follow.RunFollower`` and
stopped with ``request_stop`` like any run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from engine.errors import WorkbenchError
from engine.jobs.registry import own_process_jobs
from engine.presets import Preset
from engine.runs.run_dir import RunDir, runs_root

OUTPUT_FILE = "detached.log"          # stdout and stderr of the process, in its run directory


@dataclass
class DetachedJob:
    kind: str
    proc: subprocess.Popen
    output: Path                          # where its stdout and stderr go
    run_dir: Path                         # the run directory it writes (given with --run-dir)
    started: float = field(default_factory=time.time)

    def output_tail(self, chars: int = 1500) -> str:
        """The end of the process's output (why it ended early), '' when there is none."""
        try:
            with open(self.output, "rb") as handle:
                handle.seek(max(0, self.output.stat().st_size - chars))
                return handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""


def command(kind: str, preset_file: Path, data: str | None, run_dir: Path,
            options: dict[str, Any] | None = None) -> list[str]:
    """The CLI command of the job: options of the app's job plan become flags (``dsr`` -> ``--dsr``)."""
    argv = [sys.executable, "-m", "workbench.cli.main", kind, "--preset", str(preset_file)]
    if data:
        argv += ["--data", str(data)]
    if not (options or {}).get("resume"):               # a resumed run is named by --resume itself
        argv += ["--run-dir", str(run_dir)]
    for key, value in (options or {}).items():
        if value is not None and value is not False:
            argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return argv


def start_detached(kind: str, preset: Preset, data: str | None, options: dict[str, Any] | None = None, *,
                   run_dir: Path | None = None, env: dict[str, str] | None = None) -> DetachedJob:
    """Start ``kind`` on ``preset`` as a separate process; returns at once (the job starts in the background).
    ``run_dir``: a directory the caller created (with the preset as its preset.toml); ``env``: added variables."""
    if kind not in own_process_jobs():
        own = ", ".join(own_process_jobs())
        raise WorkbenchError(f"{kind} cannot start detached (only {own}): it runs in the app.")
    if run_dir is None:
        runs_dir = runs_root(preset.runtime.runs_dir).resolve()
        run_dir = RunDir.create(runs_dir, preset, kind).path      # writes the preset as preset.toml
    preset_file, output = run_dir / "preset.toml", run_dir / OUTPUT_FILE
    return spawn(kind, command(kind, preset_file, data, run_dir, options), output, run_dir, env)


def spawn(kind: str, argv: list[str], output: Path, folder: Path, env: dict[str, str] | None) -> DetachedJob:
    with open(output, "ab") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=os.getcwd(), env={**os.environ, **(env or {})})
    return DetachedJob(kind, proc, output, folder)
