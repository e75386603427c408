"""The value a trial scores: a metric its run recorded, named ``val.METRIC`` (its best epoch),
``eval.ROW.METRIC`` (its eval.json, or its pipeline's; with folds the mean over the folds), or
``summary.KEY``; or the difference of two such names, ``A - B`` (e.g. ``eval.dsr.rank1 -
eval.bicubic_best.rank1``). ``bicubic_best`` is the better of the two bicubic rows (the recogniser
fine-tuned on bicubic images, or the base one): the fair baseline DSR has to beat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError
from engine.evaluation.wording import finite
from engine.runs.records import read_evaluation, read_fold_evaluation, read_metrics
from engine.runs.run_dir import RunDir, linked_file

KINDS = ("val", "eval", "summary")
BEST_BICUBIC, BICUBIC_ROWS = "bicubic_best", ("bicubic", "bicubic_base")
VAL_METRICS = {"train-dsr": ("psnr", "ssim", "loss", "l1", "tv", "perceptual", "identity", "feature_match",
                             "bicubic_psnr", "bicubic_ssim"),
               "finetune": ("top1", "loss", "entropy")}
EVAL_ROWS = ("dsr", "dsr_base", "bicubic", "bicubic_base", "hr", BEST_BICUBIC)
EVAL_METRICS = ("rank1", "rank5", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "open_set_accuracy", "psnr",
                "ssim")
PIPELINE_OBJECTIVES = (
    "a pipeline trial is scored by its evaluation, and its run records no per-epoch val metrics (its stages do, "
    f"in their own runs). Give eval.ROW.METRIC with ROW one of {', '.join(EVAL_ROWS)} and METRIC one of "
    f"{', '.join(EVAL_METRICS)} (e.g. eval.dsr.rank1, or \"eval.dsr.rank1 - eval.bicubic_best.rank1\" with "
    "--baselines), or summary.KEY of its summary.json (e.g. summary.dsr_rank1).")


def check_objective(name: str) -> list[tuple[str, ...]]:
    """The metric names of an objective (one, or two for ``A - B``); a WorkbenchError for a malformed one."""
    terms = [term.strip() for term in name.split(" - ")] if " - " in name else [name.strip()]
    parsed = [tuple(term.split(".")) for term in terms]
    if len(parsed) > 2 or any(p[0] not in KINDS or len(p) != (3 if p[0] == "eval" else 2) for p in parsed):
        raise WorkbenchError(f"objective {name!r}: give val.METRIC (e.g. val.psnr, the best epoch's), "
                             "eval.ROW.METRIC (e.g. eval.dsr.rank1), summary.KEY (e.g. summary.best_psnr), or the "
                             "difference of two, e.g. \"eval.dsr.rank1 - eval.bicubic_best.rank1\".")
    return parsed


def check_metric_names(name: str, job: str) -> None:
    """Each term of the objective names a metric the trial's ``job`` records (a typo gets "did you mean")."""
    for kind, *rest in check_objective(name):
        if kind == "val" and job == "pipeline":
            raise WorkbenchError(f"objective val.{rest[0]}: {PIPELINE_OBJECTIVES}")
        if kind == "val":
            _known(f"val.{rest[0]}", rest[0], VAL_METRICS.get(job, VAL_METRICS["train-dsr"]),
                   f"{job} validates no metric by that name")
        elif kind == "eval":
            _known(f"eval.{rest[0]}", rest[0], EVAL_ROWS, "no such row")
            _known(f"eval.{rest[0]}.{rest[1]}", rest[1], EVAL_METRICS, "no such metric")
            if job != "pipeline":
                raise WorkbenchError(f"objective {name!r}: a {job} trial writes no evaluation; eval.* objectives "
                                     "need pipeline trials (--job pipeline).")


def _known(shown: str, value: str, known: tuple[str, ...], why: str) -> None:
    if value not in known:
        import difflib

        close = difflib.get_close_matches(value, known, n=1)
        hint = f" Did you mean {shown.rsplit('.', 1)[0] + '.' if '.' in shown else ''}{close[0]}?" if close else ""
        raise WorkbenchError(f"objective {shown}: {why} (known: {', '.join(known)}).{hint}")


def objective_value(run_dir: Path, name: str, maximize: bool) -> float:
    """The objective of a finished trial's run; a WorkbenchError when the run did not record it."""
    terms = check_objective(name)
    values = [_metric(run_dir, term, maximize) for term in terms]
    if any(v is None for v in values):
        missing = ".".join(terms[[v is None for v in values].index(True)])
        raise WorkbenchError(f"{run_dir} recorded no finite {missing}: pick an objective the trial's job writes "
                             "(train-dsr: val.psnr, val.ssim; finetune: val.top1; pipeline: eval.dsr.rank1, and "
                             "eval.bicubic_best.rank1 with --baselines).")
    return values[0] - values[1] if len(values) == 2 else values[0]


def _metric(run_dir: Path, term: tuple[str, ...], maximize: bool) -> float | None:
    kind, *rest = term
    if kind == "val":
        values = [r[rest[0]] for r in read_metrics(run_dir) if r.get("split") == "val" and finite(r.get(rest[0]))]
        value = (max if maximize else min)(values) if values else None
    elif kind == "summary":
        value = RunDir(run_dir).read_summary().get(rest[0])
    else:
        value = eval_metric(eval_rows(run_dir), *rest)
    return float(value) if finite(value) else None


def eval_metric(rows: dict[str, dict[str, float]], row: str, metric: str) -> float | None:
    """``row``'s ``metric``; ``bicubic_best``: the bicubic row with the higher rank-1 (its ``metric``)."""
    if row == BEST_BICUBIC:
        row = best_bicubic(rows)
        if row is None:
            return None
    value = rows.get(row, {}).get(metric)
    return float(value) if finite(value) else None


def best_bicubic(rows: dict[str, dict[str, Any]]) -> str | None:
    """The bicubic row (of ``BICUBIC_ROWS``) with the higher finite rank-1, None without one."""
    present = [r for r in BICUBIC_ROWS if isinstance(rows.get(r), dict) and finite(rows[r].get("rank1"))]
    return max(present, key=lambda r: rows[r]["rank1"]) if present else None


def eval_rows(run_dir: Path) -> dict[str, dict[str, float]]:
    """{row: {metric: value}} of the run's evaluation: the fold means when it ran folds, else its eval.json."""
    return rows_of(*run_evaluation(run_dir))


def run_evaluation(run_dir: Path) -> tuple[dict[str, Any], bool]:
    """The run's evaluation document and whether it is the fold aggregate: its eval_folds.json when it ran
    folds, else its eval.json (the run's own, or the one its summary links); ({}, False) when it has none."""
    summary = RunDir(run_dir).read_summary()
    folds = linked_file(run_dir, summary.get("eval_folds_json"))
    if folds is not None and folds.is_file():
        return read_fold_evaluation(folds) or {}, True
    for path in (run_dir / "eval.json", linked_file(run_dir, summary.get("eval_json"))):
        if path is not None and path.is_file():
            doc = read_evaluation(path)
            if doc is not None:
                return doc, False
    return {}, False


def evaluation_camera(doc: dict[str, Any], folds: bool) -> str:
    """The camera protocol of an evaluation document in words ('' for a clean or an old one)."""
    from engine.evaluation.wording import camera_protocol_text

    camera = doc.get("camera") if folds else doc.get("protocol", {}).get("camera")
    text = camera_protocol_text(camera)
    return "" if text == "clean" else text


def rows_of(doc: dict[str, Any], folds: bool) -> dict[str, dict[str, float]]:
    """{row: {metric: value}} of an evaluation document (of eval_folds.json: each metric's mean)."""
    if folds:
        return {row: {metric: stat["mean"] for metric, stat in body.items()}
                for row, body in doc.get("rows", {}).items()}
    return {row: body for row, body in doc.items() if isinstance(body, dict)}

