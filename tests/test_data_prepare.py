"""`prepare`: photo folders (sub-folders, name prefixes, PGM trees, Yale) -> the layout, split by subject."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import HR_DIR, SPLITS, VLR_DIR, load_split, prepare_dataset, split_dir, subject_of
from engine.data.prepare import parse_split
from engine.data.splitting import split_by_subject
from engine.errors import DataError
from workbench.cli.main import main


def _photo(size, seed, mode="RGB") -> Image.Image:
    """A noisy picture whose left and right quarters are pure red: a centre square crop removes them."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    arr[:, :, 2] = 255
    side = (w - h) // 2
    if side > 0:
        arr[:, :side] = (255, 0, 0)
        arr[:, w - side:] = (255, 0, 0)
    image = Image.fromarray(arr)
    return image.convert(mode) if mode != "RGB" else image


def _files(root: Path, split: str, folder: str = HR_DIR) -> list[str]:
    return sorted(p.name for p in (split_dir(root, split) / folder).iterdir())


def _subjects(root: Path, split: str) -> set[str]:
    return {subject_of(n) for n in _files(root, split)}


def test_parse_split_and_rule():
    assert parse_split("80/10/10") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_split("0.6/0.2/0.2") == pytest.approx((0.6, 0.2, 0.2))
    for bad in ("80/10", "50/10/10", "a/b/c"):
        with pytest.raises(ValueError):
            parse_split(bad)
    items = {f"s{i}": list(range(5)) for i in range(10)}
    plan = split_by_subject(items, test_fraction=0.2, val_fraction=0.2, seed=1)
    assert plan == split_by_subject(items, test_fraction=0.2, val_fraction=0.2, seed=1)
    test = {s for s, _ in plan["test"]}
    train = {s for s, _ in plan["train"]}
    assert len(test) == 2 and not test & train
    assert {s for s, _ in plan["val"]} == train and len(plan["val"]) == 8  # one held-out image per train subject
    assert sum(len(v) for v in plan.values()) == 50


def test_prepare_subfolder_tree(tmp_path):
    src = tmp_path / "photos"
    for i, subject in enumerate(["alice_smith", "bob", "carol", "dave", "erin", "frank"]):
        for j in range(4):
            folder = src / subject / ("session1" if j % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            mode = "L" if subject == "bob" else "RGB"
            suffix = ".png" if mode == "L" else ".jpg"
            _photo((200, 100), seed=10 * i + j, mode=mode).save(folder / f"img {j}{suffix}", quality=95)
    (src / "README.txt").write_text("not an image")
    (src / "carol" / "notes.txt").write_text("not an image either")

    manifest = prepare_dataset(src, tmp_path / "ds", vlr_size=(14, 16), split=(0.5, 0.25, 0.25), seed=0)
    root = tmp_path / "ds"
    assert sorted(manifest["skipped"]) == ["README.txt", "carol/notes.txt"]
    assert manifest["vlr_size"] == [14, 16] and manifest["hr_size"] == [128, 128] and manifest["seed"] == 0
    assert "antialiased" in manifest["vlr_method"] and "centre square crop" in manifest["hr_method"]
    for split in SPLITS:
        assert _files(root, split, HR_DIR) == _files(root, split, VLR_DIR)
        expected = {"images": len(_files(root, split)), "subjects": len(_subjects(root, split))}
        assert manifest["splits"][split] == expected
    assert sum(manifest["splits"][s]["images"] for s in SPLITS) == 24
    assert manifest["splits"]["test"]["subjects"] == 2  # round(0.25 * 6) subjects held out whole
    assert not _subjects(root, "test") & _subjects(root, "train")
    assert _subjects(root, "val") == _subjects(root, "train")
    every = {s for split in SPLITS for s in _subjects(root, split)}
    assert every == {"alice-smith", "bob", "carol", "dave", "erin", "frank"}
    assert "bob_session1-img-1.png" in {n for split in SPLITS for n in _files(root, split)}

    train = load_split(root, "train", (14, 16))
    assert train.hr.shape[1:] == (3, 128, 128) and train.vlr.shape[1:] == (3, 16, 14)
    hr = train.hr[train.subjects.index("dave")].float()
    assert hr[2].mean() > 240 and hr[0].mean() < 90  # the red side bands were cropped away
    assert Image.open(next((split_dir(root, "train") / VLR_DIR).iterdir())).size == (14, 16)


def test_prepare_name_prefixes_yale_style(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for i in range(1, 5):
        for condition in ("glasses", "happy", "normal"):
            _photo((320, 243), seed=i, mode="L").save(src / f"subject{i:02d}.{condition}", format="GIF")
    for j in range(3):
        _photo((128, 128), seed=j).save(src / f"007_{j:02d}_crop_128.png")
    for name in ("zoe.jpg", "zoe_2.jpg", "zoe.3.jpg"):
        _photo((100, 120), seed=9).save(src / name)
    manifest = prepare_dataset(src, tmp_path / "ds", vlr_size=(32, 32), split=(0.6, 0.2, 0.2), seed=5)
    names = {n for split in SPLITS for n in _files(tmp_path / "ds", split)}
    assert {"subject03_happy.png", "007_01_crop_128.png", "zoe_img.png", "zoe_2.png", "zoe_3.png"} <= names
    assert {subject_of(n) for n in names} == {"subject01", "subject02", "subject03", "subject04", "007", "zoe"}
    assert manifest["splits"]["test"]["subjects"] == 1


def test_prepare_pgm_tree_through_the_cli(tmp_path, capsys):
    src = tmp_path / "att_faces"
    for i in range(1, 11):
        (src / f"s{i}").mkdir(parents=True)
        for j in range(1, 5):
            _photo((92, 112), seed=100 * i + j, mode="L").save(src / f"s{i}" / f"{j}.pgm")
    dst = tmp_path / "ds"
    assert main(["prepare", str(src), str(dst), "--vlr", "32x32", "--split", "60/20/20", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "subjects" in out
    manifest = json.loads((dst / "manifest.json").read_text())
    assert manifest["splits"]["test"] == {"images": 8, "subjects": 2}
    assert manifest["splits"]["val"] == {"images": 8, "subjects": 8}  # round(0.2 * 4) = 1 image per subject
    assert manifest["source"] == str(src.resolve())
    assert _files(dst, "test")[0] in {f"s{i}_{j}.png" for i in range(1, 11) for j in range(1, 5)}
    test = load_split(dst, "test", (32, 32))
    assert len(test) == 8 and test.num_subjects == 2
    # the destination must be new
    assert main(["prepare", str(src), str(dst), "--vlr", "32x32"]) == 2
    assert str(dst) in capsys.readouterr().err


def test_prepare_errors_name_the_problem(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "ds")]) == 2
    assert "nowhere" in capsys.readouterr().err
    src = tmp_path / "src"
    for i in range(3):
        (src / f"p{i}").mkdir(parents=True)
        for j in range(2):
            _photo((64, 64), seed=j).save(src / f"p{i}" / f"{j}.jpg")
    (src / "p1" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError) as err:
        prepare_dataset(src, tmp_path / "ds", vlr_size=(16, 16))
    assert "broken.jpg" in str(err.value)
    (src / "p1" / "broken.jpg").unlink()
    lonely = tmp_path / "lonely"
    (lonely / "only").mkdir(parents=True)
    _photo((64, 64), seed=0).save(lonely / "only" / "a.png")
    _photo((64, 64), seed=1).save(lonely / "only" / "b.png")
    with pytest.raises(DataError) as err:
        prepare_dataset(lonely, tmp_path / "ds2", vlr_size=(16, 16))
    assert "two subjects" in str(err.value)
    assert not (tmp_path / "ds2").exists()  # nothing half-written
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", str(src), str(tmp_path / "ds3"), "--vlr", "32"])
    assert exit_info.value.code == 2


def test_prepare_yale(shared_dir, tmp_path):
    yale = shared_dir / "faces" / "yale"
    if not yale.is_dir():
        pytest.skip("../shared/faces/yale is absent")
    manifest = prepare_dataset(yale, tmp_path / "yale", vlr_size=(32, 32), seed=0)
    counts = manifest["splits"]
    assert sum(counts[s]["images"] for s in SPLITS) == len([p for p in yale.iterdir() if p.name.startswith("subject")])
    assert counts["train"]["subjects"] + counts["test"]["subjects"] == 15
    assert counts["test"]["subjects"] == 2 and counts["val"]["subjects"] == 13
    test = load_split(tmp_path / "yale", "test", (32, 32))
    assert test.hr.shape[1:] == (3, 128, 128) and test.vlr.shape[1:] == (3, 32, 32)
    assert all(n.startswith("subject") and "_" in n for n in test.names)
    # greyscale source: the three channels are equal
    assert bool((test.hr[:, 0] == test.hr[:, 1]).all())


def test_photos_smaller_than_the_vlr_size_are_skipped_and_listed(tmp_path):
    """Issue 25: a 1x1 photo (or any under the VLR size) silently became a flat training face."""
    src = tmp_path / "photos"
    for subject in ("alice", "bob", "carol"):
        (src / subject).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (40 * i, 90, 120)).save(src / subject / f"{i}.png")
    Image.new("RGB", (1, 1), (9, 9, 9)).save(src / "alice" / "dot.png")
    Image.new("RGB", (30, 7), (9, 9, 9)).save(src / "bob" / "strip.png")       # short side 7 < 8
    manifest = prepare_dataset(src, tmp_path / "out", vlr_size=(8, 8), hr_size=32)
    assert sum(s["images"] for s in manifest["splits"].values()) == 9
    assert "alice/dot.png (1x1: smaller than the VLR size 8x8)" in manifest["skipped"]
    assert "bob/strip.png (30x7: smaller than the VLR size 8x8)" in manifest["skipped"]
    written = [p.name for p in (tmp_path / "out").rglob("*.png")]
    assert not any("dot" in name or "strip" in name for name in written)


def test_photos_all_smaller_than_the_vlr_size_are_counted_with_their_sizes_and_nothing_is_written(tmp_path, capsys):
    """`prepare --vlr 32x32` on photos all under 32 pixels said "0 subject(s) with 0 readable image(s) ... check
    the folder structure"; it says how many photos it found, that they were too small, and their sizes."""
    src = tmp_path / "small"
    sizes = {"ann": [(24, 24), (30, 20)], "ben": [(16, 12), (28, 28)], "cat": [(31, 31), (20, 25)]}
    for subject, shapes in sizes.items():
        (src / subject).mkdir(parents=True)
        for i, size in enumerate(shapes):
            Image.new("RGB", size, (30 * i, 90, 120)).save(src / subject / f"{i}.png")
    dst = tmp_path / "ds"
    assert main(["prepare", str(src), str(dst), "--vlr", "32x32"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "6 photo(s) found, 6 of them skipped as smaller than the VLR size 32x32" in err
    assert "from 16x12 to 31x31" in err and "at most 31x31" in err
    assert "check the folder structure" not in err.lower() and "Traceback" not in err
    assert not dst.exists()
    # some too small and too few left: the count of each
    with pytest.raises(DataError, match=r"6 photo\(s\) found, 3 of them skipped .* leaving 3 subject\(s\) with 3 "
                                        r"image\(s\)"):
        prepare_dataset(src, tmp_path / "ds2", vlr_size=(24, 24))
    assert not (tmp_path / "ds2").exists()
