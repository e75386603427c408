"""``vlr-workbench runs``: the runs table ("which preset won"); ``export-csv`` and ``export-tb``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.io import atomic
from engine.errors import WorkbenchError
from engine.presets import load
from engine.runs.index import DISPLAY_COLUMNS, SORT_KEYS, display_cells, filter_rows, index_runs, metrics_csv, sort_rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="table of the runs in a runs directory: state, PSNR, rank-1, preset keys",
                       description="One row per run directory of DIR (default: runs): preset, job, state "
                                   "(running, finished, stopped, failed, dead), age, epochs, best val PSNR and "
                                   "its gain over bicubic, rank-1 of dsr/bicubic/hr from eval.json.")
    p.add_argument("runs_dir", metavar="DIR", nargs="?", default="runs")
    p.add_argument("--sort", default="age", choices=SORT_KEYS, metavar="KEY",
                   help=f"sort by one of: {', '.join(SORT_KEYS)} (default age, newest first; metrics best first)")
    p.add_argument("--reverse", action="store_true", help="reverse the sort order")
    p.add_argument("--preset", metavar="P", help="only runs of preset P")
    p.add_argument("--job", metavar="J", help="only runs of job J (train-dsr, finetune, evaluate, pipeline...)")
    p.add_argument("--against", metavar="PRESET", help="list the keys in which each run's preset differs from PRESET")
    p.add_argument("--json", action="store_true", help="print JSON (one object per run) instead of a table")
    p.set_defaults(func=cmd_runs)

    c = sub.add_parser("export-csv", help="metrics.jsonl of several runs as one CSV",
                       description="Write the metrics of the given run directories as one CSV (a run column, "
                                   "then job, stage, epoch, step, split, time and every metric).")
    c.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    c.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    c.set_defaults(func=cmd_export_csv)

    t = sub.add_parser("export-tb", help="convert runs to TensorBoard event files",
                       description="Write metrics.jsonl and samples/*.png of each run as TensorBoard events in "
                                   "RUN_DIR/tensorboard (open with `tensorboard --logdir RUN_DIR`).")
    t.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    t.set_defaults(func=cmd_export_tb)


def cmd_runs(args) -> int:
    root = Path(args.runs_dir)
    if not root.is_dir():
        raise WorkbenchError(f"{root} is not a directory. Give the runs directory (a preset's runtime.runs_dir, "
                             "default `runs` in the directory where jobs ran).")
    reference = load(args.against) if args.against else None
    rows = filter_rows(index_runs(root, reference), preset=args.preset, job=args.job)
    rows = sort_rows(rows, args.sort)
    if args.reverse:
        rows.reverse()
    if args.json:
        json.dump([row.to_json() for row in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"{len(rows)} runs in {escape(str(root))}", title_justify="left")
    table.add_column("run", overflow="fold", min_width=12)
    for name in DISPLAY_COLUMNS:
        numeric = name in ("epochs", "best PSNR", "gain") or name.endswith("%")
        table.add_column(name, no_wrap=True, min_width=len(name), justify="right" if numeric else "left")
    if reference is not None:
        table.add_column(f"differs from {escape(reference.name)}")
    for row in rows:
        cells = [row.name, *display_cells(row)]
        if reference is not None:
            cells.append(", ".join(row.differs) or "-")
        table.add_row(*map(escape, cells))
    console.print(table)
    for row in rows:
        if row.problem:
            console.print(f"{escape(row.name)}: {escape(row.problem)}", soft_wrap=True)
    return 0


def cmd_export_csv(args) -> int:
    text = metrics_csv(args.run_dirs)
    if args.output:
        atomic.write_text(Path(args.output), text)
        Console(stderr=True, highlight=False).print(f"wrote {escape(args.output)} ({text.count(chr(10)) - 1} rows)")
    else:
        sys.stdout.write(text)
    return 0


def cmd_export_tb(args) -> int:
    from engine.runs.status import run_state
    from engine.runs.tensorboard import export_run

    console = Console(highlight=False)
    for run_dir in args.run_dirs:
        if run_state(run_dir) == "running":
            raise WorkbenchError(f"{run_dir} is running: `export-tb` converts finished runs only (a running job "
                                 "writes its own events when runtime.tensorboard = true). Export it after it ends, "
                                 "or stop it first with `vlr-workbench stop`.")
        out, counts = export_run(run_dir)
        console.print(f"{escape(str(run_dir))}: {counts['scalars']} scalars, {counts['images']} images -> "
                      f"{escape(str(out))}")
    return 0
