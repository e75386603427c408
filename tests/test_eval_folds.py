"""K-fold subject splits: disjoint identities, differing folds, seeded; aggregation of eval.json files."""

from __future__ import annotations

import json

import pytest

from engine.errors import WorkbenchError
from engine.evaluation.folds import aggregate, aggregate_eval_files, fold_split, subject_folds


def _subjects(n=11, per=4):
    items = {f"s{i:02d}": [f"s{i:02d}_{j}.png" for j in range(per)] for i in range(n)}
    items["lonely"] = ["lonely_0.png"]      # one image: never a test subject (it could not probe)
    return items


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_never_share_an_identity_and_differ(k):
    items = _subjects()
    folds = subject_folds(items, k, seed=7)
    assert len(folds) == k
    for fold in folds:
        assert not set(fold.test_subjects) & set(fold.train_subjects)
        assert set(fold.test_subjects) | set(fold.train_subjects) == set(items)
        assert "lonely" in fold.train_subjects and fold.test_subjects
        plan = fold_split(items, fold, val_fraction=0.25, seed=7)
        train_ids = {s for s, _ in plan["train"]} | {s for s, _ in plan["val"]}
        assert {s for s, _ in plan["test"]} == set(fold.test_subjects) and not train_ids & set(fold.test_subjects)
        images = [img for part in plan.values() for _, img in part]
        assert sorted(images) == sorted(img for imgs in items.values() for img in imgs)   # each image once
    tests = [set(f.test_subjects) for f in folds]
    assert all(a != b and not a & b for i, a in enumerate(tests) for b in tests[i + 1:])    # disjoint, differ
    assert set().union(*tests) == set(items) - {"lonely"}                                   # every testable once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1


def test_folds_follow_the_seed():
    items = _subjects()
    assert subject_folds(items, 3, seed=1) == subject_folds(items, 3, seed=1)
    assert subject_folds(items, 3, seed=1) != subject_folds(items, 3, seed=2)


def test_too_many_folds_is_a_user_error():
    with pytest.raises(WorkbenchError, match="--folds 11"):
        subject_folds(_subjects(), 11, seed=0)
    with pytest.raises(WorkbenchError, match="at least 2"):
        subject_folds(_subjects(), 1, seed=0)


def test_aggregate_gives_mean_and_sample_spread(tmp_path):
    docs = [{"dsr": {"rank1": r, "psnr": None}, "bicubic": {"rank1": b}, "hr": None, "protocol": {}}
            for r, b in [(0.5, 0.25), (0.7, 0.25), (0.6, 0.4)]]
    paths = []
    for i, doc in enumerate(docs):
        paths.append(tmp_path / f"fold{i}.json")
        paths[-1].write_text(json.dumps(doc))
    result = aggregate_eval_files(paths)
    dsr = result["rows"]["dsr"]["rank1"]
    assert result["folds"] == 3 and dsr["n"] == 3
    assert dsr["mean"] == pytest.approx(0.6) and dsr["std"] == pytest.approx(0.1)   # sample std of .5 .7 .6
    assert (dsr["min"], dsr["max"]) == (0.5, 0.7) and "psnr" not in result["rows"]["dsr"]
    assert result["rows"]["bicubic"]["rank1"]["mean"] == pytest.approx(0.3)
    assert "hr" not in result["rows"] and aggregate([])["rows"] == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(WorkbenchError, match="bad.json"):
        aggregate_eval_files([tmp_path / "bad.json"])


def test_fold_layouts_of_a_dataset_hold_every_pair_once_and_load(tmp_path, demo_root):
    from engine.data import load_split
    from engine.evaluation.folds import layout_items, write_fold_layout

    items = layout_items(demo_root)
    assert len(items) == 12 and sum(map(len, items.values())) == 72
    folds = subject_folds(items, 3, seed=0)
    seen_test = set()
    for fold in folds:
        root = write_fold_layout(demo_root, tmp_path / f"fold{fold.index}", fold, val_fraction=0.2, seed=0)
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["fold"]["test_subjects"] == list(fold.test_subjects) and manifest["vlr_size"] == [16, 16]
        test = load_split(root, "test", (16, 16), 128)
        train = load_split(root, "train", (16, 16), 128)
        test_ids = {n.split("_", 1)[0] for n in test.names}
        assert test_ids == set(fold.test_subjects)
        assert not test_ids & {n.split("_", 1)[0] for n in train.names}
        assert len(test) + len(train) + len(load_split(root, "val", (16, 16), 128)) == 72
        seen_test |= test_ids
    assert seen_test == set(items)
