"""``vlr-workbench report RUN_DIR``: one self-contained page (Markdown or HTML) of an evaluation.

It holds the protocol, a line per scored row with its 95% intervals, the paired comparisons,
the CMC and ROC curves (PNG, drawn with matplotlib's Agg backend, no display needed), the sample
strips of the run's stages (``samples/*.png``: the first and last of each) and the preset's
differences from the built-in it came from. RUN_DIR is an evaluate run (``eval.json`` in it) or
a pipeline run (its ``summary.json`` names the stage run directories, or they are its
sub-directories). Markdown links its images in ``<report>_files/``; HTML embeds them (base64
``data:`` URIs) and writes nothing else, so the page is one file to mail or attach. Text in
backticks is inline code: kept in Markdown, ``<code>`` in HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

from engine.errors import WorkbenchError
from engine.evaluation import wording
from engine.evaluation.page import figure_png, write_page
from engine.runs.records import read_evaluation, read_fold_evaluation, read_summary, sample_strips
from engine.runs.run_dir import linked_file

METRIC_COLUMNS = (("rank1", "rank-1"), ("rank5", "rank-5"), ("eer", "EER"), ("tar_at_far_1e-2", "TAR@FAR 1e-2"),
                  ("tar_at_far_1e-3", "TAR@FAR 1e-3"))
SAMPLES_PER_STAGE = 2
REWRITE = "Re-run the job that wrote it."


def run_dirs(run_dir: Path) -> list[Path]:
    """The run directory, the stage runs its summary.json names, and its sub-directories that are runs."""
    found = [run_dir]
    doc = read_summary(run_dir)
    stored_paths = [p for stages in [doc.get("stages")] + [f.get("stages") for f in _fold_records(doc)]
                    if isinstance(stages, dict) for p in stages.values()]
    for stored in stored_paths:
        if not isinstance(stored, str) or not stored:
            continue
        for candidate in (Path(stored), run_dir / stored, run_dir.parent / Path(stored).name):
            if (candidate / "preset.toml").is_file() or (candidate / "eval.json").is_file():
                found.append(candidate)
                break
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if (sub / "preset.toml").is_file() or (sub / "eval.json").is_file():
            found.append(sub)
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def _fold_records(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``folds`` entries of a ``pipeline --folds K`` summary (none for other runs)."""
    folds = summary.get("folds")
    return [f for f in folds if isinstance(f, dict)] if isinstance(folds, list) else []


def find_eval_json(run_dir: Path, dirs: list[Path]) -> Path:
    doc = read_summary(run_dir)
    if doc:
        for named in [doc.get("eval_json")] + [f.get("eval_json") for f in _fold_records(doc)]:
            linked = linked_file(run_dir, named)
            if linked is not None and linked.is_file():
                return linked
    for path in dirs:
        if (path / "eval.json").is_file():
            return path / "eval.json"
    raise WorkbenchError(f"{run_dir} holds no eval.json (nor do the stage runs its summary.json names). Give an "
                         "evaluate or pipeline run directory whose evaluation finished, or run `vlr-workbench "
                         "evaluate` first.")


def _plots(doc: dict[str, Any]) -> dict[str, bytes]:
    """The CMC (and ROC, when eval.json has curves) figures as PNG bytes, drawn in memory."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    rows = [r for r in wording.rows_present(doc) if isinstance(doc.get(r), dict)]
    written: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for row in rows:
        cmc = doc[row].get("cmc", [])
        if cmc:
            ax.plot(range(1, len(cmc) + 1), [100 * v for v in cmc], marker="o", ms=3,
                    label=wording.ROW_LABELS.get(row, (row,))[0])
    ax.set(xlabel="rank k", ylabel="identified within rank k (%)", title="CMC", ylim=(0, 101))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # eval.json without curves: an empty plot, no legend
        ax.legend(fontsize=8)
    fig.tight_layout()
    written["cmc"] = figure_png(fig)
    plt.close(fig)

    curves = {row: doc[row]["roc"] for row in rows if "roc" in doc[row]}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        positive = [f for roc in curves.values() for f in roc["far"] if f > 0]
        floor = min(positive) / 2 if positive else 1e-4
        for row, roc in curves.items():
            ax.step([max(f, floor) for f in roc["far"]], [100 * t for t in roc["tar"]], where="post",
                    label=wording.ROW_LABELS.get(row, (row,))[0])
        ax.set_xscale("log")
        ax.set(xlabel="false accept rate (log)", ylabel="true accept rate (%)", title="ROC (verification)",
               ylim=(0, 101))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written["roc"] = figure_png(fig)
        plt.close(fig)
    return written


def _samples(dirs: list[Path]) -> list[tuple[str, Path]]:
    found = []
    for path in dirs:
        strips = [png for _epoch, png in sample_strips([path])]
        picks = strips if len(strips) <= SAMPLES_PER_STAGE else [strips[0], strips[-1]]
        found += [(f"{path.name}/samples/{p.name}", p) for p in picks]
    return found


def _preset_diff(run_dir: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """(what it is compared with, [(key, built-in value, run value)])."""
    from engine import presets as P

    preset_file = run_dir / "preset.toml"
    if not preset_file.is_file():
        return "no preset.toml in the run directory", []
    preset = P.load(preset_file)
    base_name, through = P.builtin_origin(preset)
    via = f" (through the user preset{'s' if len(through) > 1 else ''} {', '.join(f'`{n}`' for n in through)})"
    note = f"preset `{preset.name}` against the built-in `{base_name}` it came from" + (via if through else "")
    if base_name is None:
        base_name = "vlr-32x32"
        origin = (f"derived from `{through[0]}`, which leads back to no built-in" if through
                  else "derived from no built-in")
        note = f"preset `{preset.name}` ({origin}) against `vlr-32x32`, the guide's values"
    base = P.load(base_name)
    return note, [(key, P.show_value(a), P.show_value(b)) for key, a, b in P.diff(base, preset)]


def _row_line(doc: dict[str, Any], row: str) -> list[str]:
    body = doc[row]
    spec = doc.get("protocol", {}).get("rows", {}).get(row, {})
    recogniser = spec.get("recogniser", "-")
    if spec.get("recogniser_file"):
        recogniser += f" ({Path(spec['recogniser_file']).name})"
    cells = [wording.ROW_LABELS.get(row, (row,))[0], spec.get("probes", row), recogniser]
    cells += [wording.rate_with_interval(body.get(key), wording.row_interval(doc, row, key))
              for key, _label in METRIC_COLUMNS]
    cells.append(f"{body['auc']:.3f}" if isinstance(body.get("auc"), (int, float)) else "-")
    cells.append(f"{body['psnr']:.2f}" if isinstance(body.get("psnr"), (int, float)) else "-")
    return cells


def result_blocks(doc: dict[str, Any]) -> list[tuple]:
    """An eval.json's rows with their 95% intervals and its paired comparisons (is a margin beyond noise?)."""
    blocks: list[tuple] = []
    rows = [r for r in wording.rows_present(doc) if isinstance(doc.get(r), dict)]
    blocks.append(("h", 2, "Rows"))
    blocks.append(("p", "Each row: the probes (VLR through DSR, VLR through bicubic, or HR) and the recogniser that "
                        "scored them. Rates in %, with the 95% bootstrap interval in brackets."))
    header = ["row", "probes", "recogniser", *(label for _k, label in METRIC_COLUMNS), "AUC", "PSNR (dB)"]
    blocks.append(("table", header, [_row_line(doc, r) for r in rows]))
    lines = wording.comparison_lines(doc)
    if lines:
        blocks.append(("h", 2, "Paired comparisons (rank-1, same probes)"))
        blocks.append(("table", ["comparison", "difference [95% interval], exact McNemar"],
                       [[label, text] for label, text in lines]))
    return blocks


def build_blocks(run_dir: Path, doc: dict[str, Any], eval_json: Path, figures: Collection[str],
                 samples: list[tuple[str, Path]]) -> list[tuple]:
    """The page as blocks (:mod:`engine.evaluation.page`); ``figures``: the keys of the figures drawn."""
    protocol = doc.get("protocol", {})
    blocks: list[tuple] = [("h", 1, f"Evaluation report: {run_dir.name}"),
                           ("p", f"Results: {eval_json}")]
    blocks.append(("h", 2, "Protocol"))
    items = [("split", protocol.get("split")), ("data", protocol.get("data_root")),
             ("subjects (unseen identities)", protocol.get("subjects")),
             ("gallery distractors (no probe, never trained on)", protocol.get("distractors", 0)),
             ("gallery images", protocol.get("gallery_images")), ("probes", protocol.get("probes")), ("VLR size", protocol.get("vlr_size")),
             ("HR size", protocol.get("hr_size")), ("open-set threshold", protocol.get("threshold")),
             ("seed", protocol.get("seed")), ("DSR", protocol.get("dsr")), ("ties", protocol.get("ties")),
             ("camera", wording.camera_protocol_text(protocol.get("camera")) or "clean (not recorded)")]
    intervals = doc.get("intervals")
    if intervals is not None:
        items.append(("95% intervals", f"{intervals.get('method', '-')}; {intervals.get('resamples', '?')} "
                                       f"resamples, seed {intervals.get('seed', '?')}"))
    blocks.append(("table", ["item", "value"], [[k, "-" if v is None else str(v)] for k, v in items]))
    blocks += result_blocks(doc)
    blocks.append(("h", 2, "Curves"))
    for key, alt in (("cmc", "CMC curves"), ("roc", "ROC curves")):
        if key in figures:
            blocks.append(("fig", key, alt))
    if "roc" not in figures:
        blocks.append(("p", "No ROC: this eval.json predates stored ROC curves (re-run evaluate)."))
    blocks.append(("h", 2, "Sample strips (VLR | bicubic | SR | HR)"))
    if samples:
        blocks += [("img", path, label) for label, path in samples]
    else:
        blocks.append(("p", "No sample strips in this run (samples/*.png are written by train-dsr)."))
    note, changes = _preset_diff(run_dir)
    blocks.append(("h", 2, "Preset"))
    blocks.append(("p", note + ("" if changes else ": no differences")))
    if changes:
        blocks.append(("table", ["key", "built-in", "this run"], [list(c) for c in changes]))
    return blocks


FOLD_COLUMNS = (("rank1", "rank-1", True), ("rank5", "rank-5", True), ("eer", "EER", True),
                ("tar_at_far_1e-2", "TAR@FAR 1e-2", True), ("auc", "AUC", False))


def fold_blocks(aggregated: dict[str, Any], path: Path, detailed_fold: int) -> list[tuple]:
    """The repeated-splits section of a ``pipeline --folds K`` report: each row's mean ± spread, the
    per-fold rank-1, the per-fold paired differences; the rest of the page details one fold."""
    from engine.evaluation.folds import spread_text

    rows = aggregated.get("rows", {})
    names = [n for n in wording.ROW_ORDER if n in rows] + [n for n in rows if n not in wording.ROW_ORDER]
    k = aggregated.get("folds", "?")
    blocks: list[tuple] = [
        ("h", 2, f"Repeated splits: {k} folds"),
        ("p", f"The whole pipeline was run {k} times, each fold holding different subjects out for testing "
              f"(seed {aggregated.get('seed', '?')}). Each cell: mean ± sample standard deviation over the folds "
              f"(min to max); rates in %. Aggregated results: {path}"),
        ("table", ["row", *(label for _k, label, _r in FOLD_COLUMNS)],
         [[wording.ROW_LABELS.get(n, (n,))[0], *(spread_text(rows[n].get(key), rate=rate)
                                                  for key, _l, rate in FOLD_COLUMNS)] for n in names]),
    ]
    per_fold = [[wording.ROW_LABELS.get(n, (n,))[0], *(wording.percent(v) for v in rows[n]["rank1"]["values"])]
                for n in names if "rank1" in rows[n]]
    if per_fold:
        blocks.append(("table", ["rank-1 per fold", *(f"fold {i + 1}" for i in range(len(per_fold[0]) - 1))],
                       per_fold))
    comparisons = aggregated.get("comparisons", {})
    if comparisons:
        blocks.append(("table", ["paired rank-1 difference (points)", "mean ± sd (min to max)",
                                 "significant folds (McNemar p<0.05)"],
                       [[f"{c.get('a', '?')} vs {c.get('b', '?')}",
                         f"{100 * c['difference']['mean']:+.1f} ± {100 * c['difference']['std']:.1f} "
                         f"({100 * c['difference']['min']:+.1f} to {100 * c['difference']['max']:+.1f})",
                         f"{c.get('significant_folds', 0)} of {c['difference']['n']}"] for c in comparisons.values()]))
    subjects = aggregated.get("test_subjects")
    if isinstance(subjects, list):
        blocks.append(("table", ["fold", "held-out test subjects"],
                       [[str(i + 1), ", ".join(map(str, s))] for i, s in enumerate(subjects)]))
    blocks.append(("p", f"Below: the protocol, rows, curves and samples of fold {detailed_fold} in detail."))
    return blocks


def write_report(run_dir: str | Path, out: str | Path | None = None, *, as_html: bool = False) -> Path:
    """Write the report of ``run_dir`` (default ``RUN_DIR/report.md`` or ``.html``); returns its path."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise WorkbenchError(f"{run_dir} is not a directory. Give a run directory made by evaluate or pipeline "
                             "(runs/<time>-<preset>-<job>).")
    dirs = run_dirs(run_dir)
    eval_json = find_eval_json(run_dir, dirs)
    doc = read_evaluation(eval_json, REWRITE)
    out = Path(out).expanduser() if out else run_dir / ("report.html" if as_html else "report.md")
    if out.is_dir():
        raise WorkbenchError(f"--out {out} is a directory. Give a file name, e.g. {out / 'report.md'}.")
    figures = _plots(doc)
    blocks = build_blocks(run_dir, doc, eval_json, set(figures), _samples(dirs))
    summary = read_summary(run_dir)
    folds_file = linked_file(run_dir, summary.get("eval_folds_json"))
    if folds_file is not None and folds_file.is_file():
        fold = next((f.get("fold") for f in _fold_records(summary)
                     if linked_file(run_dir, f.get("eval_json")) == eval_json), 1)
        blocks[2:2] = fold_blocks(read_fold_evaluation(folds_file, REWRITE), folds_file, fold)
    return write_page(out, blocks, figures, as_html=as_html)
