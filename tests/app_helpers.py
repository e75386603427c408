"""Shared helpers of the app tests (a module, not fixtures, so each test file stays explicit)."""

from __future__ import annotations

import dataclasses

from engine.presets import load
from workbench.app.app import WorkbenchApp
from workbench.app.gpu_probe import NO_GPU
from waiting import wait_for  # noqa: F401 - the app tests' wait, re-exported


class NoGpuProbe:
    """A probe that always reads "no GPU" (deterministic screens on any machine)."""

    def read(self):
        return NO_GPU

    def close(self):
        pass


def make_app(preset: str = "cpu-demo", data: str | None = None, **kwargs) -> WorkbenchApp:
    """The app with jobs inside it (``detached=False``: the fake jobs of these tests live in this process);
    tests of the default own-process jobs pass ``detached=True`` or press B."""
    kwargs.setdefault("probe_factory", NoGpuProbe)
    kwargs.setdefault("detached", False)
    kwargs.setdefault("cursor_blink", False)
    return WorkbenchApp(load(preset), data=data, **kwargs)


def use_fake_job(monkeypatch, kind: str, function: str) -> None:
    import engine.jobs.registry

    monkeypatch.setitem(engine.jobs.registry.JOBS, kind,
                        dataclasses.replace(engine.jobs.registry.JOBS[kind], function=f"app_fake_jobs:{function}"))


def capture_notes(app) -> list[str]:
    """Every toast message the app shows from now on (the list fills as it notifies)."""
    notes: list[str] = []
    original = app.notify

    def notify(message, **kwargs):
        notes.append(message)
        original(message, **kwargs)
    app.notify = notify
    return notes
