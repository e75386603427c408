"""E on the Runs tab: which runs can be exported, and the export job for one (its model folder: RUN/export)."""

from __future__ import annotations

from pathlib import Path

from engine import presets
from engine.jobs.registry import JobRequest
from engine.runs.index import RunRow

EXPORTABLE = ("pipeline", "evaluate")
FOLDER = "export"


def why_not_export(row: RunRow | None) -> str:
    """Why ``row`` cannot be exported ('' when it can)."""
    if row is None:
        return "no run highlighted: pick a finished pipeline or evaluate run in the table, then E exports it"
    if row.job not in EXPORTABLE:
        return (f"{row.name} is a {row.job} run: E exports a finished pipeline or evaluate run (DSR and its "
                "fine-tuned recogniser, with their evaluation)")
    if row.state != "finished":
        return f"{row.name} is {row.state}: only a finished run can be exported"
    return ""


def export_request(run: Path) -> JobRequest:
    """The export of ``run`` into RUN/export with the run's own preset (an earlier export there is replaced);
    raises WorkbenchError when the run's preset cannot be read."""
    preset = presets.load(run / "preset.toml")
    return JobRequest("export", preset, None, {"run": str(run), "out": str(run / FOLDER), "force": True})
