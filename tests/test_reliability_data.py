"""Datasets with 16-bit greyscale images, broken symbolic links and damaged manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import HR_DIR, SPLITS, VLR_DIR, load_split, split_dir
from engine.data.pairs import clear_cache
from engine.data.pixels import to_rgb8
from engine.data.prepare import collect_images, load_rgb
from engine.errors import DataError
from workbench.cli.main import main

NAMES = ["001_01.png", "001_02.png", "002_01.png", "002_02.png"]


def _gradient16(size: tuple[int, int]) -> np.ndarray:
    """A 16-bit horizontal gradient over the whole 0..65535 range."""
    w, h = size
    row = np.linspace(0, 65535, w).round().astype(np.uint16)
    return np.tile(row, (h, 1))


@pytest.fixture
def root(tmp_path) -> Path:
    """A dataset (HR 32, VLR 8x8) of 16-bit greyscale PNG gradients in every split, and a manifest."""
    root = tmp_path / "ds"
    for split in SPLITS:
        for folder, size in ((HR_DIR, (32, 32)), (VLR_DIR, (8, 8))):
            (split_dir(root, split) / folder).mkdir(parents=True)
            for name in NAMES:
                Image.fromarray(_gradient16(size)).save(split_dir(root, split) / folder / name)
    (root / "manifest.json").write_text(json.dumps({"vlr_size": [8, 8], "hr_size": [32, 32]}))
    clear_cache()
    return root


def test_16bit_greyscale_png_is_scaled_not_clipped_to_white(root):
    with Image.open(split_dir(root, "train") / HR_DIR / NAMES[0]) as image:
        assert image.mode.startswith("I")  # really a 16-bit file (Pillow: I;16)
    loaded = load_split(root, "train", (8, 8), 32)
    hr = loaded.hr[0].numpy()
    expected = np.rint(_gradient16((32, 32)) * 255.0 / 65535.0).astype(np.uint8)
    assert (hr == expected[None]).all()  # every channel equals the scaled grey
    assert hr.min() == 0 and hr.max() == 255 and len(np.unique(hr)) > 20  # a gradient, not all white
    assert (loaded.vlr[0, 0, 0].numpy() == np.rint(_gradient16((8, 8))[0] * 255.0 / 65535.0)).all()


def test_prepare_reads_16bit_sources_the_same_way(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(_gradient16((40, 30))).save(path)
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (30, 40, 3) and rgb[..., 0].max() == 255 and rgb[0, 0, 0] == 0
    assert len(np.unique(rgb)) > 20


def test_images_without_an_agreed_scale_are_refused():
    with pytest.raises(ValueError, match="32-bit"):
        to_rgb8(Image.fromarray(np.full((4, 4), 1 << 20, dtype=np.int32)))
    with pytest.raises(ValueError, match="outside"):
        to_rgb8(Image.fromarray(np.full((4, 4), 3.0, dtype=np.float32)))
    as_float = np.asarray(to_rgb8(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32))))
    assert (as_float == 128).all()
    eight_bit_in_i = Image.fromarray(np.full((4, 4), 200, dtype=np.int32))  # 8-bit data widened to mode I
    assert (np.asarray(to_rgb8(eight_bit_in_i)) == 200).all()


def test_check_data_reports_a_16bit_dataset_with_real_values(root, capsys):
    assert main(["check-data", str(root)]) == 0
    assert "OK" in capsys.readouterr().out
    assert load_split(root, "val", (8, 8), 32).hr.float().mean() < 200  # not the all-white conversion


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_symbolic_links_are_named_by_load_split_and_check_data(root, capsys, kind):
    folder = split_dir(root, "val") / VLR_DIR
    link = folder / "003_01.png"
    if kind == "dangling":
        os.symlink(folder / "gone.png", link)
    else:
        os.symlink(folder / "003_02.png", link)
        os.symlink(link, folder / "003_02.png")
    clear_cache()
    with pytest.raises(DataError) as err:
        load_split(root, "val", (8, 8), 32)
    message = str(err.value)
    assert "003_0" in message and ("missing file" in message if kind == "dangling" else "loop" in message)
    assert main(["check-data", str(root)]) == 2
    captured = capsys.readouterr()
    assert "003_0" in captured.err and "Traceback" not in captured.err and "OK" not in captured.out


def test_a_good_symbolic_link_still_counts(root):
    folder = split_dir(root, "test")
    for sub in (HR_DIR, VLR_DIR):
        os.replace(folder / sub / NAMES[0], folder / sub / "real.bin")
        os.symlink(folder / sub / "real.bin", folder / sub / NAMES[0])
    assert len(load_split(root, "test", (8, 8), 32)) == len(NAMES)


def test_prepare_skips_and_lists_broken_links(tmp_path):
    src = tmp_path / "photos"
    for subject in ("a", "b"):
        (src / subject).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (40, 40), (j * 50, 20, 20)).save(src / subject / f"{j}.png")
    os.symlink(src / "nowhere.png", src / "a" / "9.png")
    os.symlink(src / "loop1.png", src / "loop2.png")
    os.symlink(src / "loop2.png", src / "loop1.png")
    found, skipped = collect_images(src)
    assert sorted(found) == ["a", "b"] and len(found["a"]) == 2
    assert sorted(skipped) == ["a/9.png (broken symbolic link)", "loop1.png (broken symbolic link)",
                               "loop2.png (broken symbolic link)"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"vlr_size": "big"}', '{"vlr_size": [8, 99999]}',
                                     '{"vlr_size": [8, 8], "hr_size": [true, 1]}', "\udcff"])
def test_check_data_names_a_damaged_manifest(root, capsys, content):
    (root / "manifest.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert main(["check-data", str(root)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "Traceback" not in err


def test_check_data_on_a_file_or_a_missing_root(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["check-data", str(tmp_path / "file"), "--vlr", "8x8"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["check-data", str(tmp_path / "none"), "--vlr", "8x8"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["check-data", str(tmp_path), "--vlr", "99999999999x8"])
    assert exit_info.value.code == 2
