"""Repeated subject splits (K folds) and the aggregation of their eval.json files.

:func:`subject_folds` deals the subjects that can be tested (two or more images: one enrols, the
rest probe) into ``k`` disjoint groups after a seeded shuffle; fold ``i`` holds group ``i`` out
whole as its test identities and trains on every other subject, so no identity is ever in both
train and test of a fold and the test identities of two folds never overlap.
:func:`fold_split` then applies the usual val rule (:mod:`engine.data.splitting`) to the training
subjects. :func:`aggregate` turns the K eval.json documents into mean, standard deviation, min
and max per row and metric.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from engine.errors import WorkbenchError
from engine.runs.records import read_evaluation

T = TypeVar("T")
AGGREGATED_METRICS = ("rank1", "rank5", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "open_set_accuracy",
                      "psnr", "ssim")


@dataclass(frozen=True)
class Fold:
    index: int                         # 0-based
    test_subjects: tuple[str, ...]     # held out whole (unseen identities)
    train_subjects: tuple[str, ...]    # everything else (train + val images)


def subject_folds(items_by_subject: Mapping[str, Sequence[Any]], k: int, seed: int) -> list[Fold]:
    """``k`` folds whose test subjects partition the testable subjects; deterministic in ``seed``."""
    if k < 2:
        raise WorkbenchError(f"--folds {k}: K-fold evaluation needs at least 2 folds (or leave --folds out "
                             "for the single split).")
    testable = sorted(s for s, items in items_by_subject.items() if len(items) >= 2)
    if len(testable) < k + 1:
        raise WorkbenchError(f"--folds {k}: the data holds {len(testable)} subject(s) with two or more images, "
                             f"but {k} folds need at least {k + 1} (each fold holds some out and trains on the "
                             "others). Lower --folds or add subjects.")
    random.Random(seed).shuffle(testable)
    groups = [sorted(testable[i::k]) for i in range(k)]
    everyone = sorted(items_by_subject)
    return [Fold(i, tuple(group), tuple(s for s in everyone if s not in set(group))) for i, group in enumerate(groups)]


def fold_split(items_by_subject: Mapping[str, Sequence[T]], fold: Fold, *, val_fraction: float, seed: int
               ) -> dict[str, list[tuple[str, T]]]:
    """``{"train"|"val"|"test": [(subject, item)]}`` of one fold (val: the split rule's, per subject)."""
    from engine.data.splitting import split_by_subject

    train_part = {s: items_by_subject[s] for s in fold.train_subjects}
    plan = split_by_subject(train_part, test_fraction=0.0, val_fraction=val_fraction, seed=seed + fold.index)
    plan["test"] = [(s, item) for s in fold.test_subjects for item in items_by_subject[s]]
    return plan


def layout_items(root: str | Path) -> dict[str, list[tuple[str, str]]]:
    """{subject: [(split, file name)]} of every HR/VLR pair of a dataset in the layout (all splits)."""
    from engine.data.layout import HR_DIR, SPLITS, VLR_DIR, split_dir, subject_of

    found: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        folder = split_dir(root, split) / HR_DIR
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.png")):
            if (split_dir(root, split) / VLR_DIR / path.name).is_file():
                found.setdefault(subject_of(path.name), []).append((split, path.name))
    if not found:
        raise WorkbenchError(f"{root} holds no HR/VLR pairs in the layout (ROOT/{{train,val,test}}_processed/"
                             "{hr_images,vlr_images}/*.png). Give a dataset made by `vlr-workbench prepare`.")
    return found


def write_fold_layout(root: str | Path, dst: str | Path, fold: Fold, *, val_fraction: float, seed: int) -> Path:
    """Write fold ``fold`` of the dataset ``root`` as a new dataset ``dst`` in the layout (files hard-linked,
    copied where links fail), with a manifest naming the fold and its test subjects. The dataset's
    unlabelled faces and gallery distractors (no labelled identity: in no fold's train or test) go to
    every fold unchanged."""
    from engine.io import atomic
    from engine.data.layout import DISTRACTORS, EXTRA_SPLITS, HR_DIR, MANIFEST, SPLITS, has_split
    from engine.data.writer import check_destination, make_split_dirs, staged_dir

    root, dst = Path(root), Path(dst)
    check_destination(dst)
    items = layout_items(root)
    plan = fold_split(items, fold, val_fraction=val_fraction, seed=seed)
    extras = [split for split in EXTRA_SPLITS if has_split(root, split)]
    with staged_dir(dst) as tmp:
        make_split_dirs(tmp, extras)
        for split, members in plan.items():
            for _subject, (source_split, name) in members:
                _link_pair(root, source_split, tmp, split, name)
        counts = {s: {"images": len(plan[s]), "subjects": len({sub for sub, _ in plan[s]})} for s in SPLITS}
        for split in extras:
            names = sorted(p.name for p in (Path(root) / f"{split}_processed" / HR_DIR).glob("*.png"))
            for name in names:
                _link_pair(root, split, tmp, split, name)
            counts[split] = {"images": len(names), **({"subjects": len(names)} if split == DISTRACTORS else {})}
        source_manifest = root / MANIFEST
        base = json.loads(source_manifest.read_text(encoding="utf-8")) if source_manifest.is_file() else {}
        atomic.write_json(tmp / MANIFEST, {
            **{k: v for k, v in base.items() if k in ("hr_size", "vlr_size", "source", "degrade", *EXTRA_SPLITS)},
            "fold": {"index": fold.index, "test_subjects": list(fold.test_subjects), "seed": seed,
                     "val_fraction": val_fraction, "from": str(root)},
            "splits": counts,
        })
    return dst


def _link_pair(root: Path, source_split: str, dst: Path, split: str, name: str) -> None:
    """The HR/VLR pair ``name`` of ``root``'s ``source_split`` into ``dst``'s ``split`` (hard link, else copy)."""
    import os
    import shutil

    from engine.data.layout import HR_DIR, VLR_DIR, split_dir

    for sub in (HR_DIR, VLR_DIR):
        source, target = split_dir(root, source_split) / sub / name, split_dir(dst, split) / sub / name
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def _stats(values: list[float]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n, "values": values}


def aggregate(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{"folds": K, "rows": {row: {metric: {"mean", "std" (sample, n-1), "min", "max", "n", "values"}}}}.

    ``docs`` as :func:`engine.runs.records.read_evaluation` reads eval.json. A row or metric missing (or
    null) in a fold is left out of that fold's values; ``n`` says how many folds it has.
    """
    rows: dict[str, dict[str, Any]] = {}
    names = [name for doc in docs for name, body in doc.items() if isinstance(body, Mapping) and "rank1" in body]
    for name in dict.fromkeys(names):
        for metric in AGGREGATED_METRICS:
            values = [float(doc[name][metric]) for doc in docs if (doc.get(name) or {}).get(metric) is not None]
            if values:
                rows.setdefault(name, {})[metric] = _stats(values)
    cameras = [doc.get("protocol", {}).get("camera") for doc in docs]
    return {"folds": len(docs), "rows": rows, "comparisons": aggregate_comparisons(docs),
            "camera": next((c for c in cameras if c is not None), None)}


def aggregate_comparisons(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{comparison: {"difference": stats of the per-fold paired rank-1 differences, "significant_folds": n}}
    over the folds whose eval.json holds that comparison."""
    found: dict[str, dict[str, Any]] = {}
    names = [name for doc in docs for name in doc.get("comparisons", {})]
    for name in dict.fromkeys(names):
        entries = [doc["comparisons"][name] for doc in docs if name in doc.get("comparisons", {})]
        values = [float(e["difference"]) for e in entries if e.get("difference") is not None]
        if values:
            found[name] = {"a": entries[0].get("a"), "b": entries[0].get("b"), "difference": _stats(values),
                           "significant_folds": sum(bool(e.get("significant")) for e in entries)}
    return found


def spread_text(stat: Mapping[str, Any] | None, *, rate: bool = True) -> str:
    """``42.6% ± 3.1 (39.0 to 45.2)`` (mean ± sample standard deviation, min to max; rates in points),
    ``0.912 ± 0.020 (...)`` for a score; ``-`` when absent."""
    if not isinstance(stat, Mapping) or not isinstance(stat.get("mean"), (int, float)):
        return "-"
    scale, unit, digits = (100.0, "%", 1) if rate else (1.0, "", 3)
    mean, std, low, high = (scale * float(stat[k]) for k in ("mean", "std", "min", "max"))
    return f"{mean:.{digits}f}{unit} ± {std:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def aggregate_eval_files(paths: Sequence[str | Path]) -> dict[str, Any]:
    """:func:`aggregate` of eval.json files (a missing or unreadable one is an error naming it)."""
    docs = []
    for path in map(Path, paths):
        docs.append(read_evaluation(path, "Re-run that fold's evaluation (`vlr-workbench pipeline --resume`)."))
    result = aggregate(docs)
    result["files"] = [str(p) for p in paths]
    return result
