"""``vlr-workbench report RUN_DIR | STUDY``: a self-contained Markdown or HTML page of an evaluation run, or
of a sweep (its trials, history, importances and the best trial's evaluation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a Markdown/HTML report of an evaluate or pipeline run, or of a sweep",
                       description="Of a run: the protocol, every row with its 95% bootstrap intervals, the paired "
                                   "comparisons (McNemar), CMC and ROC plots (PNG), the sample strips and the "
                                   "preset's differences from its built-in, in one page. Of a sweep (give its "
                                   "study name): its trials, which tip won what, the optimisation history, "
                                   "parallel coordinates, parameter importances and the best trial's evaluation "
                                   "with intervals. Markdown links its PNGs in REPORT_files/; --html embeds them.")
    p.add_argument("target", metavar="RUN_DIR|STUDY",
                   help="an evaluate or pipeline run directory, or the name of a sweep's study")
    p.add_argument("--html", action="store_true", help="write HTML with the images embedded (default: Markdown)")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="report file (default: RUN_DIR/report.md, or runs_dir/sweeps/STUDY-report.md; "
                        ".html with --html)")
    p.add_argument("--preset", help="a study's base preset: its runtime.runs_dir holds the study (default: the "
                                    "runs_dir recorded when it started, else every known preset's is searched)")
    p.add_argument("--storage", help="a study's RDB URL, when it has one")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    target = Path(args.target).expanduser()
    if target.is_dir() or not args.target.replace("-", "").replace("_", "").replace(".", "").isalnum():
        from engine.evaluation.report import write_report

        path = write_report(target, args.out, as_html=args.html)
    else:
        path = _sweep_report(args)
    console.print(f"report: {escape(str(path))}")
    return 0


def _sweep_report(args) -> Path:
    from engine.runs.run_dir import runs_root
    from engine.sweep.finding import find_study
    from engine.sweep.report import write_sweep_report

    found = find_study(args.target, args.preset, args.storage, missing_hint=(
        f"{args.target} is neither a run directory nor a study there. Give an evaluate or pipeline run "
        "directory, or a study's name (with --preset P whose runs_dir holds it, or --storage URL)."))
    suffix = ".html" if args.html else ".md"
    default = runs_root(found.runs_dir) / "sweeps" / f"{found.study.study_name}-report{suffix}"
    out = args.out.expanduser() if args.out else default
    return write_sweep_report(found.study, found.base, out, as_html=args.html)
