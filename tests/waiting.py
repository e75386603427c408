"""The one way tests wait: for a condition, never for a fixed time (a slow CI machine only waits longer)."""

from __future__ import annotations

import time

POLL_SECONDS = 0.05


def wait_until(predicate, what: str = "condition", timeout: float = 60.0):
    """Poll ``predicate()`` until it returns something true (returned); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)


async def wait_for(pilot, predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """``wait_until`` inside a running app: the app runs (``pilot.pause``) between polls."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(POLL_SECONDS)
