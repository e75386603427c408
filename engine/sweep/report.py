"""``vlr-workbench report STUDY``: one page (Markdown or self-contained HTML) of a sweep.

It holds the study's set-up and counts, every trial (state, value, values tried, tip label, pruned
epoch, run directory), which tip won what, the optimisation history, the parallel coordinates and the
parameter importances (Optuna's matplotlib plots, drawn with the Agg backend), and the best trial's
evaluation with its 95% intervals and paired comparisons (or its fold means): is the winner's margin
beyond noise? Rendering is :mod:`engine.evaluation.page`'s, as for a run's report.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from engine import presets
from engine.evaluation.page import figure_png, write_page
from engine.evaluation.report import fold_blocks, result_blocks
from engine.presets import Preset
from engine.runs.records import read_evaluation, read_fold_evaluation
from engine.runs.run_dir import RunDir, linked_file
from engine.sweep.margins import HEADER as MARGIN_HEADER, margin_rows
from engine.sweep.study import importances, trial_rows


def write_sweep_report(study, base: Preset, out: Path, *, as_html: bool) -> Path:
    """Write the report of ``study`` (an Optuna study of this workbench) to ``out``; returns its path."""
    rows = trial_rows(study)
    weights = importances(study)
    figures = _plots(study, weights, (study.user_attrs.get("setup") or {}).get("objective") or "objective")
    blocks: list[tuple] = [("h", 1, f"Sweep report: {study.study_name}")]
    blocks += _setup_blocks(study, rows, base)
    blocks += _trial_blocks(rows)
    blocks += _tip_blocks(rows, len(study.directions) > 1, study.directions[0].name.lower() == "maximize")
    margins = margin_rows(rows)
    if margins:
        blocks += [("h", 2, "Each trial against bicubic"),
                   ("p", "Rank-1 in % with 95% bootstrap intervals over test subjects; the margin is DSR minus the "
                         "best bicubic row on the same probes (paired interval; McNemar's exact test), or the fold "
                         "means with their spread."),
                   ("table", MARGIN_HEADER, margins)]
    blocks += [("h", 2, "Optimisation history"), ("fig", "history", "objective per trial and best so far"),
               ("h", 2, "Parallel coordinates"), ("fig", "parallel", "the values each trial tried, by objective")]
    blocks.append(("h", 2, "Parameter importances"))
    if weights:
        blocks.append(("table", ["key", "importance"], [[f"`{k}`", f"{v:.3f}"] for k, v in weights.items()]))
        blocks.append(("fig", "importances", "parameter importances"))
    else:
        blocks.append(("p", "Not yet: importances need two complete trials of a single-objective study."))
    blocks += _best_blocks(study, rows, base)
    return write_page(out, blocks, figures, as_html=as_html, title=f"Sweep report: {study.study_name}")


def _setup_blocks(study, rows: list[dict[str, Any]], base: Preset) -> list[tuple]:
    setup = study.user_attrs.get("setup") or {}
    states = [row["state"] for row in rows]
    objectives = [f"`{setup.get('objective', '?')}` ({study.directions[0].name.lower()})"]
    if len(study.directions) > 1:
        objectives.append(f"`{setup.get('objective2', '?')}` ({study.directions[1].name.lower()}); Pareto front")
    items = [("base preset", f"`{setup.get('base_preset', base.name)}`"), ("trials run", setup.get("job", "?")),
             ("objective", "; ".join(objectives)),
             ("pipeline options", f"baselines {'on' if setup.get('baselines') else 'off'}, "
                                  f"folds {setup.get('folds') or 'none'}"),
             ("trials", ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "none")]
    return [("h", 2, "Set-up"), ("table", ["item", "value"], [[k, str(v)] for k, v in items])]


def _value_text(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    return " / ".join(f"{v:.4g}" for v in values if isinstance(v, (int, float))) or "-"


def _trial_blocks(rows: list[dict[str, Any]]) -> list[tuple]:
    table = [[str(r["number"]), r["state"] + (f" @ epoch {r['pruned_at_epoch']}" if r["pruned_at_epoch"] else ""),
              _value_text(r["value"]) + (" *" if r["best"] else ""),
              ", ".join(f"`{k}`={v:.4g}" if isinstance(v, float) else f"`{k}`={v}" for k, v in r["params"].items()),
              r["label"] or "sampler", Path(r["run_dir"]).name if r["run_dir"] else "-"] for r in rows]
    return [("h", 2, "Trials"), ("p", "`*` marks the best trial (or the Pareto front of two objectives)."),
            ("table", ["#", "state", "value", "values tried", "tried because", "run"], table)]


def _tip_blocks(rows: list[dict[str, Any]], pareto: bool, maximize: bool) -> list[tuple]:
    """Which tip won what: each labelled trial's value, its rank among the complete trials, and its
    difference from the base preset's trial."""
    labelled = [r for r in rows if r["label"]]
    if not labelled or pareto:
        return []
    complete = sorted((r for r in rows if r["state"] == "complete" and isinstance(r["value"], (int, float))),
                      key=lambda r: r["value"], reverse=maximize)
    rank = {r["number"]: i + 1 for i, r in enumerate(complete)}
    base = next((r for r in labelled if r["label"].startswith("base") and r["number"] in rank), None)
    table = []
    for r in labelled:
        gain = (f"{r['value'] - base['value']:+.4g}" if base and r["number"] in rank and r is not base else "-")
        table.append([r["label"], str(r["number"]), r["state"], _value_text(r["value"]),
                      f"{rank[r['number']]} of {len(complete)}" if r["number"] in rank else "-", gain])
    return [("h", 2, "Which tip won what"),
            ("table", ["tried", "trial", "state", "value", "rank", "vs the base preset"], table)]


def _best_blocks(study, rows: list[dict[str, Any]], base: Preset) -> list[tuple]:
    best = [r for r in rows if r["best"] and r["state"] == "complete"]
    if not best:
        return [("h", 2, "Best trial"), ("p", "No complete trial yet.")]
    row = best[0]
    blocks: list[tuple] = [("h", 2, f"Best trial: {row['number']} ({_value_text(row['value'])})")]
    run_dir = Path(row["run_dir"]) if row["run_dir"] else None
    if run_dir is None or not (run_dir / "preset.toml").is_file():
        return blocks + [("p", f"Its run directory is gone ({row['run_dir']}).")]
    blocks.append(("p", f"Run: `{run_dir}`"))
    changes = presets.diff(base, presets.load(run_dir / "preset.toml"))
    changes = [c for c in changes if c[0] != "runtime.num_threads" and c[0] != "name"]
    if changes:
        blocks.append(("table", ["key", "base", "best trial"],
                       [[f"`{k}`", presets.show_value(a), presets.show_value(b)] for k, a, b in changes]))
    return blocks + _evaluation_blocks(run_dir)


def _evaluation_blocks(run_dir: Path) -> list[tuple]:
    """The best trial's evaluation: its fold means and paired differences, or its rows with intervals."""
    summary = RunDir(run_dir).read_summary()
    folds = linked_file(run_dir, summary.get("eval_folds_json"))
    if folds is not None and folds.is_file():
        return fold_blocks(read_fold_evaluation(folds, "Re-run the trial's pipeline."), folds, 1)[:-1]
    for path in (run_dir / "eval.json", linked_file(run_dir, summary.get("eval_json"))):
        if path is not None and path.is_file():
            return [("p", f"Evaluation: `{path}`")] + result_blocks(read_evaluation(path, "Re-run the trial."))
    return [("p", "This trial's job has no evaluation (train-dsr or finetune trials): sweep pipeline trials "
                  "(`--job pipeline --baselines`) to see the winner's rank-1 against bicubic with intervals.")]


def _plots(study, weights: dict[str, float], name: str) -> dict[str, bytes]:
    """Optuna's history, parallel-coordinate and importance plots as PNG bytes (those that can be drawn)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
                and all(math.isfinite(v) for v in t.values or [])]
    first = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    drawers = {"history": lambda: optuna_plots.plot_optimization_history(study, target=first, target_name=name),
               "parallel": lambda: optuna_plots.plot_parallel_coordinate(study, target=first, target_name=name),
               "importances": lambda: optuna_plots.plot_param_importances(study, target=first)}
    figures: dict[str, bytes] = {}
    for key, draw in drawers.items():
        if not complete or (key == "importances" and not weights) or (key == "parallel" and len(complete) < 2):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # Optuna marks its matplotlib plots experimental
            axes = draw()
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.set_size_inches(7, 4)
        figure.tight_layout()
        figures[key] = figure_png(figure)
        plt.close(figure)
    return figures
