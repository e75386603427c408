"""Reading a run's record files (metrics.jsonl, JSON object files such as summary.json and eval.json).

Kept apart from ``run_dir`` (which writes them) so that readers such as the TensorBoard export, the runs
table and the tips engine depend on reading alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of metrics.jsonl; a truncated last line (a run still writing) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object file (eval.json, summary.json); unreadable, malformed or not an object is an error
    naming the file, with ``fix`` as the advice."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"{path}: cannot read it ({exc}). {fix}") from None
    if not isinstance(data, dict):
        raise WorkbenchError(f"{path}: expected a JSON object with rows dsr/bicubic/hr, got "
                             f"{type(data).__name__}. {fix}")
    return data
