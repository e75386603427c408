"""``vlr-workbench evaluate`` and ``vlr-workbench pipeline``, with the side-by-side results table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine import presets as P
from engine.jobs import JobRequest

console = Console(highlight=False)

# (key in eval.json, row label, kind): "rate" shows as a percentage, "db" in decibels, "score" as is
ROWS = (
    ("rank1", "rank-1", "rate"), ("rank5", "rank-5", "rate"),
    ("open_set_accuracy", "open set: accepted, correct", "rate"),
    ("open_set_false_accept", "open set: false accept", "rate"),
    ("open_set_rejected", "open set: rejected", "rate"),
    ("auc", "ROC AUC", "score"), ("eer", "EER", "rate"),
    ("tar_at_far_1e-2", "TAR @ FAR 1e-2", "rate"), ("tar_at_far_1e-3", "TAR @ FAR 1e-3", "rate"),
    ("psnr", "PSNR (dB)", "db"), ("ssim", "SSIM", "score"),
)
COLUMNS = (("dsr", "DSR"), ("bicubic", "bicubic"), ("hr", "HR (upper bound)"))


def _cell(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{100 * value:.1f}%"
    if kind == "db":
        return f"{value:.2f}"
    return f"{value:.3f}"


def table_rows(doc: dict) -> list[list[str]]:
    """[label, DSR, bicubic, HR] text per metric of an eval.json document (missing = "-")."""
    return [[label, *(_cell((doc.get(variant) or {}).get(key), kind) for variant, _ in COLUMNS)]
            for key, label, kind in ROWS]


def results_table(doc: dict) -> Table:
    """eval.json as a table: one row per metric, one column per probe kind (missing = "-")."""
    protocol = doc.get("protocol", {})
    table = Table(title=f"test split: {protocol.get('subjects', '?')} subjects, {protocol.get('probes', '?')} probes, "
                        f"threshold {protocol.get('threshold', '?')}")
    table.add_column("metric")
    for _key, label in COLUMNS:
        table.add_column(label, justify="right")
    for row in table_rows(doc):
        table.add_row(*row)
    return table


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu-demo", help="preset name or path (default: cpu-demo)")
    p.add_argument("--data", help="dataset root (default: the preset's data.root, else the demo faces)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="rank-1/5, CMC, open set and verification of DSR vs bicubic vs HR probes",
                       description="Evaluate on the test split: HR gallery (the first eval.gallery_per_subject "
                                   "sorted images of each subject, averaged), probes = every other image as "
                                   "VLR -> DSR, VLR -> bicubic and HR, all through the same recogniser. "
                                   "Writes eval.json in a new run directory.")
    _add_common(p)
    p.add_argument("--dsr", help="DSR checkpoint (default: the latest train-dsr run's best.pt of this preset; "
                                 "none = bicubic and HR only)")
    p.add_argument("--edgeface", help="recogniser weights (default: the latest finetune run's best.pt of this "
                                      "preset, else the preset's base recogniser)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pipeline", help="train DSR, fine-tune EdgeFace and evaluate, in one go",
                       description="The guide's three commands in order, each using the previous outputs: "
                                   "(pre-train the recogniser when the preset has no weights) -> train-dsr -> "
                                   "finetune with that DSR -> evaluate with both. One run directory per stage "
                                   "plus a pipeline run directory whose summary.json links them.")
    _add_common(p)
    p.set_defaults(func=cmd_pipeline)


def _print_eval(result) -> None:
    """The results table of the eval.json a finished evaluate or pipeline job names in its summary."""
    eval_json = result.summary.get("eval_json")
    if eval_json and Path(eval_json).is_file():
        console.print(results_table(json.loads(Path(eval_json).read_text())))
        console.print(f"results: {eval_json}")


def cmd_evaluate(args) -> int:
    from workbench.cli.job_runner import run_in_foreground

    options = {k: v for k, v in (("dsr", args.dsr), ("edgeface", args.edgeface)) if v}
    return run_in_foreground(JobRequest(kind="evaluate", preset=P.load(args.preset), data=args.data,
                                        options=options), on_done=_print_eval)


def cmd_pipeline(args) -> int:
    from workbench.cli.job_runner import run_in_foreground

    def report(result) -> None:
        _print_eval(result)
        console.print(f"pipeline summary: {result.run_dir / 'summary.json'}")

    return run_in_foreground(JobRequest(kind="pipeline", preset=P.load(args.preset), data=args.data),
                             on_done=report)
