"""``vlr-workbench evaluate`` and ``vlr-workbench pipeline``, with the side-by-side results table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import presets as P
from engine.errors import WorkbenchError
from engine.evaluation import wording
from engine.runs.records import read_evaluation, read_fold_evaluation
from engine.jobs.options import EvaluateOptions, PipelineOptions
from engine.jobs.registry import JobRequest
from workbench.cli.run_flags import add_run_flags, check_resume, launch_torchrun

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
INTERVAL_KEYS = {"rank1", "rank5", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3"}


def _cell(value, kind: str, interval=None) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return wording.rate_with_interval(value, interval)
    if kind == "db":
        return f"{value:.2f}"
    return f"{value:.3f}"


def columns(doc: dict) -> list[tuple[str, str]]:
    """(row key, column label) of every row an eval.json holds: dsr, bicubic, hr and any named extra."""
    return [(key, wording.ROW_LABELS[key][0]) for key in wording.rows_present(doc)]


def table_rows(doc: dict) -> list[list[str]]:
    """[label, one cell per row of :func:`columns`] per metric (missing = "-"); rates carry their
    bootstrap interval when eval.json has one (``42.6% [31.0, 55.1]``)."""
    out = []
    for key, label, kind in ROWS:
        cells = []
        for variant, _ in columns(doc):
            interval = wording.row_interval(doc, variant, key) if key in INTERVAL_KEYS else None
            cells.append(_cell((doc.get(variant) or {}).get(key), kind, interval))
        out.append([label, *cells])
    return out


def results_table(doc: dict) -> Table:
    """eval.json as a table: one row per metric, one column per scored row (missing = "-")."""
    protocol = doc.get("protocol", {})
    extra = f" + {protocol['distractors']} distractors" if protocol.get("distractors") else ""
    camera = wording.camera_protocol_text(protocol.get("camera"))
    title = (f"test split: {protocol.get('subjects', '?')} subjects{extra}, {protocol.get('probes', '?')} probes, "
             f"threshold {protocol.get('threshold', '?')}" + (f"; {camera}" if camera else ""))
    intervals = doc.get("intervals")
    if intervals is not None:
        title += (f"; [95% interval: bootstrap over subjects, {intervals.get('resamples', '?')} resamples, "
                  f"seed {intervals.get('seed', '?')}]")
    table = Table(title=escape(title))
    table.add_column("metric")
    for _key, label in columns(doc):
        table.add_column(label, justify="right")
    for row in table_rows(doc):
        table.add_row(*(cell.replace(" [", "\n[", 1) for cell in row))   # interval on its own line: fits 80 columns
    return table


def comparison_table(doc: dict) -> Table | None:
    """Paired rank-1 differences (same probes) with interval and McNemar, or None when absent."""
    lines = wording.comparison_lines(doc)
    if not lines:
        return None
    table = Table(title="paired rank-1 differences (same probes)")
    table.add_column("comparison")
    table.add_column("difference [95% interval], exact McNemar")
    for label, text in lines:
        table.add_row(escape(label), escape(text))
    return table


def recognisers_text(doc: dict) -> str:
    """Which recogniser scored which row (the protocol's rows)."""
    rows = doc.get("protocol", {}).get("rows", {})
    names = [n for n in wording.ROW_ORDER if n in rows] + [n for n in rows if n not in wording.ROW_ORDER]
    return "; ".join(f"{wording.ROW_LABELS.get(name, (name,))[0]}: {rows[name].get('probes', '?')} probes, "
                     f"{rows[name].get('recogniser', '?')} recogniser" for name in names)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="cpu-demo", help="preset name or path (default: cpu-demo)")
    p.add_argument("--data", help="dataset root (default: the preset's data.root, else the demo faces)")


def _add_distractors(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distractors", type=int, metavar="N",
                   help="enrol N extra identities with no probe in the gallery (every row and fold the same N), "
                        "from the dataset's distractors, which `prepare --unlabelled DIR --distractors N` holds out "
                        "of all training (default: the preset's eval.distractors, 0 = none)")


def _add_probe_degrade(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-degrade", metavar="SPEC",
                   help="the 'unseen camera' protocol: make the test probes again from HR through this camera spec "
                        "(e.g. 'motion=1:3,resize=bilinear,poisson=0.5:1.5,jpeg=25:50'; seeded per image; the "
                        "gallery stays HR; refused on a dataset made with prepare --degrade); default: the preset's "
                        "eval.probe_degrade")


def _with_flags(args):
    """The preset of --preset with --probe-degrade applied (validated like the preset key it sets)."""
    preset = P.load(args.preset)
    if args.probe_degrade is not None:
        preset = preset.with_changes({"eval.probe_degrade": args.probe_degrade}, source="--probe-degrade")
    return preset


def _check_distractors_flag(args) -> None:
    if args.distractors is not None and args.distractors < 0:
        raise WorkbenchError(f"--distractors {args.distractors}: give a number of distractor identities >= 0 "
                             "(0 = none).")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="rank-1/5, CMC, open set and verification of DSR vs bicubic vs HR probes, "
                                        "with intervals",
                       description="Evaluate on the test split: HR gallery (the first eval.gallery_per_subject "
                                   "sorted images of each subject, averaged), probes = every other image as "
                                   "VLR -> DSR, VLR -> bicubic and HR, each row scored by its own recogniser "
                                   "(--edgeface for DSR and HR, --edgeface-bicubic for bicubic, --edgeface-base "
                                   "for the dsr_base/bicubic_base rows), with 95% bootstrap intervals over "
                                   "subjects and paired McNemar tests. Writes eval.json in a new run directory.")
    _add_common(p)
    p.add_argument("--dsr", help="DSR checkpoint (default: the latest train-dsr run's best.pt of this preset; "
                                 "none = bicubic and HR only)")
    p.add_argument("--edgeface", help="recogniser for the DSR and HR rows, normally fine-tuned on DSR outputs "
                                      "(default: the latest finetune run's best.pt of this preset, else the "
                                      "preset's base recogniser)")
    p.add_argument("--edgeface-bicubic", metavar="PATH",
                   help="recogniser fine-tuned on bicubic images: scores the bicubic row (default: the --edgeface one)")
    p.add_argument("--edgeface-base", metavar="PATH",
                   help="base recogniser (not fine-tuned) for the extra rows dsr_base and bicubic_base (default: "
                        "runtime.edgeface_weights, else the latest pretrain run; none = no base rows)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples over test subjects for the 95%% intervals (default 1000; 0 = none)")
    _add_distractors(p)
    _add_probe_degrade(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pipeline", help="train DSR, fine-tune EdgeFace and evaluate, in one go",
                       description="The guide's three commands in order, each using the previous outputs: "
                                   "(pre-train the recogniser when the preset has no weights) -> train-dsr -> "
                                   "finetune with that DSR -> evaluate with both. One run directory per stage "
                                   "plus a pipeline run directory whose summary.json links them.")
    _add_common(p)
    p.add_argument("--edgeface", metavar="WEIGHTS", help="recogniser to start from (default: runtime.edgeface_weights, "
                                                         "else the latest finished pretrain run, else pre-train one)")
    p.add_argument("--baselines", action="store_true",
                   help="also fine-tune a recogniser on bicubic images (same preset), so the bicubic row is scored "
                        "by its own fine-tuned recogniser; eval.json then holds five rows (bicubic and DSR, each "
                        "with the base and the fine-tuned recogniser, and HR)")
    p.add_argument("--folds", type=int, metavar="K",
                   help="repeat the whole pipeline on K subject splits (seeded by runtime.seed; each fold holds "
                        "different identities out for testing) and report each row's mean and spread")
    p.add_argument("--bootstrap", type=int, metavar="N",
                   help="bootstrap resamples for the evaluation's 95%% intervals (default 1000; 0 = none)")
    _add_distractors(p)
    _add_probe_degrade(p)
    add_run_flags(p, "pipeline")
    p.set_defaults(func=cmd_pipeline)


def _print_eval(result) -> None:
    """The results table of the eval.json a finished evaluate or pipeline job names in its summary."""
    eval_json = result.summary.get("eval_json")
    if eval_json and Path(eval_json).is_file():
        doc = read_evaluation(Path(eval_json), "Run the evaluation again to rewrite it.")
        console.print(results_table(doc))
        comparisons = comparison_table(doc)
        if comparisons is not None:
            console.print(comparisons)
        if recognisers_text(doc):
            console.print(f"rows: {escape(recognisers_text(doc))}")
        console.print(f"results: {escape(str(eval_json))}")


def cmd_evaluate(args) -> int:
    from workbench.cli.job_runner import run_in_foreground

    if args.bootstrap < 0:
        raise WorkbenchError(f"--bootstrap {args.bootstrap}: give a number of resamples >= 0 (1000 is usual, "
                             "0 turns the intervals off).")
    _check_distractors_flag(args)
    options = EvaluateOptions(dsr=args.dsr, edgeface=args.edgeface, edgeface_bicubic=args.edgeface_bicubic,
                              edgeface_base=args.edgeface_base, bootstrap=args.bootstrap, distractors=args.distractors)
    return run_in_foreground(JobRequest(kind="evaluate", preset=_with_flags(args), data=args.data,
                                        options=options), on_done=_print_eval)


FOLD_METRICS = (("rank1", "rank-1", True), ("rank5", "rank-5", True), ("eer", "EER", True), ("auc", "ROC AUC", False))


def folds_table(aggregated: dict) -> Table:
    """eval_folds.json as a table: one line per row, each metric as mean ± sample std (min to max) over folds."""
    from engine.evaluation.folds import spread_text

    rows = aggregated.get("rows", {})
    table = Table(title=escape(f"{aggregated.get('folds', '?')} folds (different held-out subjects, seed "
                               f"{aggregated.get('seed', '?')}): mean ± standard deviation (min to max)"))
    table.add_column("row")
    for _key, label, _rate in FOLD_METRICS:
        table.add_column(label, justify="right")
    names = [n for n in wording.ROW_ORDER if n in rows] + [n for n in rows if n not in wording.ROW_ORDER]
    for name in names:
        table.add_row(escape(wording.ROW_LABELS.get(name, (name,))[0]),
                      *(escape(spread_text(rows[name].get(key), rate=rate)) for key, _l, rate in FOLD_METRICS))
    return table


def fold_comparison_lines(aggregated: dict) -> list[str]:
    """'dsr vs bicubic: +4.6 ± 2.0 points (1.2 to 7.0), significant in 2 of 3 folds' per comparison."""
    out = []
    for name, body in aggregated.get("comparisons", {}).items():
        diff = body["difference"]
        out.append(f"{body.get('a', '?')} vs {body.get('b', '?')} (rank-1): {100 * diff['mean']:+.1f} ± "
                   f"{100 * diff['std']:.1f} points ({100 * diff['min']:+.1f} to {100 * diff['max']:+.1f}), significant (McNemar p<0.05) in "
                   f"{body.get('significant_folds', 0)} of {diff['n']} folds")
    return out


def _print_folds(result) -> bool:
    path = result.summary.get("eval_folds_json")
    if not path or not Path(path).is_file():
        return False
    aggregated = read_fold_evaluation(Path(path), "Run the pipeline with --folds again to rewrite it.")
    console.print(folds_table(aggregated))
    for line in fold_comparison_lines(aggregated):
        console.print(escape(line))
    console.print(f"per-fold results: {escape(', '.join(map(str, aggregated.get('files', []))))}")
    console.print(f"aggregated: {escape(str(path))}")
    return True


def cmd_pipeline(args) -> int:
    from workbench.cli.job_runner import run_in_foreground

    def report(result) -> None:
        if not _print_folds(result):
            _print_eval(result)
        from engine.sweep.margins import pipeline_verdict

        line = pipeline_verdict(result.summary)
        if line:
            console.print(f"[bold]{escape(line)}[/]")
        console.print(f"pipeline summary: {result.run_dir / 'summary.json'}")

    if args.folds is not None and args.folds < 2:
        raise WorkbenchError(f"--folds {args.folds}: give K >= 2 (each fold holds different subjects out), or "
                             "leave --folds out for the dataset's own split.")
    if args.bootstrap is not None and args.bootstrap < 0:
        raise WorkbenchError(f"--bootstrap {args.bootstrap}: give a number of resamples >= 0 (1000 is usual, "
                             "0 turns the intervals off).")
    _check_distractors_flag(args)
    check_resume(args.resume, "pipeline")
    if args.nproc and args.nproc > 1:
        return launch_torchrun(args.nproc)
    options = PipelineOptions(edgeface=args.edgeface, resume=args.resume, allow_other_data=args.allow_other_data,
                              baselines=args.baselines, folds=args.folds, bootstrap=args.bootstrap,
                              distractors=args.distractors, run_dir=args.run_dir)
    return run_in_foreground(JobRequest(kind="pipeline", preset=_with_flags(args), data=args.data,
                                        options=options), on_done=report)
