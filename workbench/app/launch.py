"""``vlr-workbench`` with no command: open the app on a preset (the last used one, else cpu-demo).

``vlr-workbench serve`` serves the same app in a browser (one process per tab).
"""

from __future__ import annotations

import os

from engine.errors import PresetError
from engine.presets import Preset, load
from workbench.app.app_state import read_last_preset, write_last_preset

FIRST_RUN_PRESET = "cpu-demo"
DETACHED_ENV = "VLR_WORKBENCH_DETACHED"   # =1: the app starts with detached start on (B toggles it)


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


def launch_app(preset: str | None = None, data: str | None = None) -> int:
    """Run the app until it quits; returns the exit code."""
    from workbench.app.app import WorkbenchApp

    chosen = initial_preset(preset)
    write_last_preset(chosen.name)
    app = WorkbenchApp(chosen, data=data, detached=os.environ.get(DETACHED_ENV, "") not in ("", "0"))
    result = app.run()
    return int(result or app.return_code or 0)
