"""``vlr-workbench`` with no command: open the app on a preset (the last used one, else cpu-demo).

``vlr-workbench serve`` serves the same app in a browser (one process per tab).
"""

from __future__ import annotations

import os

from engine.errors import PresetError
from engine.presets import Preset, load
from workbench.app.app_state import read_last_preset, write_last_preset

FIRST_RUN_PRESET = "cpu-demo"
STORAGE_ENV = "VLR_WORKBENCH_STORAGE"   # the app's --storage, as `serve` hands it on (kept out of command lines)
JOBS_ENV = "VLR_WORKBENCH_JOBS"   # "app": t f p run jobs inside the app; else (the default) in their own process


def initial_preset(requested: str | None) -> Preset:
    """``--preset`` when given (errors are the user's to fix), else the last used, else cpu-demo."""
    if requested:
        return load(requested)
    last = read_last_preset()
    if last:
        try:
            return load(last)
        except PresetError:
            pass  # deleted or broken since: fall back to the demo preset
    return load(FIRST_RUN_PRESET)


def jobs_in_own_process() -> bool:
    """Where t f p run jobs: their own process (the default), or the app's thread with VLR_WORKBENCH_JOBS=app.

    Own process: the job outlives whatever ends the app (a dropped SSH session, a closed browser tab)
    and has an interpreter and OpenMP runtime of its own; ``benchmarks/bench_train.py`` prints what
    the app costs a job in either mode.
    """
    return os.environ.get(JOBS_ENV, "").strip().lower() != "app"


def launch_app(preset: str | None = None, data: str | None = None, storage: str | None = None) -> int:
    """Run the app until it quits; returns the exit code."""
    from workbench.app.app import WorkbenchApp

    chosen = initial_preset(preset)
    write_last_preset(chosen.name)
    app = WorkbenchApp(chosen, data=data, detached=jobs_in_own_process(), storage=storage)
    result = app.run()
    return int(result or app.return_code or 0)
