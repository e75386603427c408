"""The split rule shared by `prepare` and the demo data.

* test: whole subjects held out (a ``test_fraction`` of the subjects with at least two images),
  so evaluation identifies identities never seen in training (one gallery image + probes each);
* val: held-out images of the *training* subjects (a ``val_fraction`` of each subject's images,
  at least one when the subject has two or more), because fine-tuning validation is closed-set
  (classification top-1 over the training identities);
* train: the remaining images of the training subjects.
"""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")

SPLIT_RULE = ("test = a test_fraction of the subjects (with >= 2 images), held out whole (unseen identities); "
              "val = a val_fraction of each remaining subject's images (at least 1 when it has >= 2; "
              "closed-set validation); train = the rest")


def split_by_subject(items_by_subject: dict[str, Sequence[T]], *, test_fraction: float, val_fraction: float,
                     seed: int) -> dict[str, list[tuple[str, T]]]:
    """``{"train"|"val"|"test": [(subject, item), ...]}`` by the rule above; deterministic in ``seed``."""
    rng = random.Random(seed)
    subjects = sorted(items_by_subject)
    eligible = [s for s in subjects if len(items_by_subject[s]) >= 2]
    rng.shuffle(eligible)
    n_test = round(test_fraction * len(eligible)) if test_fraction > 0 else 0
    if test_fraction > 0 and len(eligible) >= 2:
        n_test = min(max(n_test, 1), len(eligible) - 1)
    test_subjects = set(eligible[:n_test])
    out: dict[str, list[tuple[str, T]]] = {"train": [], "val": [], "test": []}
    for subject in subjects:
        items = list(items_by_subject[subject])
        if subject in test_subjects:
            out["test"].extend((subject, item) for item in items)
            continue
        order = list(range(len(items)))
        rng.shuffle(order)
        n_val = 0
        if val_fraction > 0 and len(items) >= 2:
            n_val = min(max(round(val_fraction * len(items)), 1), len(items) - 1)
        held = set(order[:n_val])
        for index, item in enumerate(items):
            out["val" if index in held else "train"].append((subject, item))
    return out
