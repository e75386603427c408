"""The value a trial scores: a metric its run recorded, named ``val.METRIC`` (its best epoch),
``eval.ROW.METRIC`` (its eval.json, or its pipeline's), or ``summary.KEY``."""

from __future__ import annotations

import math
from pathlib import Path

from engine.errors import WorkbenchError
from engine.runs.records import read_evaluation, read_metrics
from engine.runs.run_dir import RunDir, linked_file

KINDS = ("val", "eval", "summary")


def check_objective(name: str) -> tuple[str, ...]:
    parts = tuple(name.split("."))
    if parts[0] not in KINDS or len(parts) != (3 if parts[0] == "eval" else 2):
        raise WorkbenchError(f"objective {name!r}: give val.METRIC (e.g. val.psnr, the best epoch's), "
                             "eval.ROW.METRIC (e.g. eval.dsr.rank1) or summary.KEY (e.g. summary.best_psnr).")
    return parts


def objective_value(run_dir: Path, name: str, maximize: bool) -> float:
    """The objective of a finished trial's run; a WorkbenchError when the run did not record it."""
    kind, *rest = check_objective(name)
    value = None
    if kind == "val":
        values = [r[rest[0]] for r in read_metrics(run_dir) if r.get("split") == "val"
                  and isinstance(r.get(rest[0]), (int, float)) and math.isfinite(r[rest[0]])]
        value = (max if maximize else min)(values) if values else None
    elif kind == "summary":
        value = RunDir(run_dir).read_summary().get(rest[0])
    else:
        value = _eval_doc(run_dir).get(rest[0], {}).get(rest[1])
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise WorkbenchError(f"{run_dir} recorded no finite {name}: pick an objective the trial's job writes "
                             "(train-dsr: val.psnr, val.ssim; finetune: val.top1; pipeline: eval.dsr.rank1).")
    return float(value)


def _eval_doc(run_dir: Path) -> dict:
    linked = RunDir(run_dir).read_summary().get("eval_json")
    for path in (run_dir / "eval.json", linked_file(run_dir, linked)):
        if path is not None and path.is_file():
            doc = read_evaluation(path)
            if doc is not None:
                return doc
    return {}
