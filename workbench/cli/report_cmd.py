"""``vlr-workbench report RUN_DIR``: a self-contained Markdown or HTML page of an evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a Markdown/HTML report of an evaluate or pipeline run",
                       description="The protocol, every row with its 95% bootstrap intervals, the paired "
                                   "comparisons (McNemar), CMC and ROC plots (PNG), the sample strips and the "
                                   "preset's differences from its built-in, in one page. Markdown links its PNGs "
                                   "in REPORT_files/; --html embeds them.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="an evaluate or pipeline run directory")
    p.add_argument("--html", action="store_true", help="write HTML with the images embedded (default: Markdown)")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="report file (default: RUN_DIR/report.md, or report.html with --html)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from engine.evaluation.report import write_report

    path = write_report(args.run_dir, args.out, as_html=args.html)
    console.print(f"report: {escape(str(path))}")
    return 0
