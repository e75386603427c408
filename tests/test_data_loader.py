"""The layout loader: pairing, sizes, decoding errors, uint8 tensors, the in-process cache, check-data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.data import HR_DIR, SPLITS, VLR_DIR, load_split, split_dir, subject_of, to_float
from engine.data.layout import parse_size
from engine.errors import DataError
from workbench.cli.main import main


def _write_split(root: Path, split: str, names: list[str], vlr_size=(14, 16), hr_size=128, mode="RGB") -> None:
    for folder, size in ((HR_DIR, (hr_size, hr_size)), (VLR_DIR, vlr_size)):
        (split_dir(root, split) / folder).mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(names):
            colour = (k * 40 % 256, 100, 200) if mode == "RGB" else k * 40 % 256
            Image.new(mode, size, colour).save(split_dir(root, split) / folder / name)


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    names = ["001_01_01_010_00_crop_128.png", "001_02.png", "002_01.png", "003_01.png", "003_02.png"]
    for split in SPLITS:
        _write_split(tmp_path / "ds", split, names)
    return tmp_path / "ds"


def test_subject_and_size_parsing():
    assert subject_of("001_01_01_010_00_crop_128.png") == "001"
    assert subject_of(Path("x/demo0007_03.png")) == "demo0007"
    assert subject_of("subject01.png") == "subject01"
    assert parse_size("14x16") == (14, 16)
    with pytest.raises(ValueError):
        parse_size("32")
    assert split_dir("/r", "val") == Path("/r/val_processed")


def test_load_split_gives_uint8_tensors_labels_and_counts(tiny_root):
    loaded = load_split(tiny_root, "train", (14, 16))
    assert len(loaded) == 5 and loaded.num_subjects == 3
    assert loaded.classes == ["001", "002", "003"]
    assert loaded.labels.tolist() == [0, 0, 1, 2, 2]
    assert loaded.hr.dtype == torch.uint8 and loaded.hr.shape == (5, 3, 128, 128)
    assert loaded.vlr.shape == (5, 3, 16, 14)  # (N, C, height, width) of a 14-wide, 16-tall image
    # the third file is drawn with colour (80, 100, 200): channel order and values survive
    assert loaded.hr[2, :, 5, 5].tolist() == [80, 100, 200]
    assert loaded.vlr[2, :, 15, 13].tolist() == [80, 100, 200]
    floats = to_float(loaded.vlr)
    assert floats.dtype == torch.float32 and float(floats.max()) <= 1.0
    assert torch.allclose(floats[2, 2, 0, 0], torch.tensor(200 / 255))
    assert loaded.to("cpu").hr.device.type == "cpu"
    assert loaded.summary() == "train: 5 images, 3 subjects"


def test_greyscale_images_become_rgb(tmp_path):
    _write_split(tmp_path, "val", ["007_a.png", "008_b.png"], vlr_size=(32, 32), mode="L")
    loaded = load_split(tmp_path, "val", (32, 32))
    assert loaded.hr.shape == (2, 3, 128, 128)
    assert loaded.hr[1, :, 0, 0].tolist() == [40, 40, 40]


def test_second_load_is_cached_until_the_folder_changes(tiny_root):
    first = load_split(tiny_root, "test", (14, 16))
    calls = []
    second = load_split(tiny_root, "test", (14, 16), progress=lambda done, total: calls.append((done, total)))
    assert second.hr.data_ptr() == first.hr.data_ptr()  # same tensors: no decoding
    assert calls == [(10, 10)]
    _write_split(tiny_root, "test", ["004_01.png"])
    third = load_split(tiny_root, "test", (14, 16))
    assert len(third) == 6 and third.num_subjects == 4


def test_missing_partner_names_the_file(tiny_root):
    (split_dir(tiny_root, "val") / VLR_DIR / "002_01.png").unlink()
    with pytest.raises(DataError) as err:
        load_split(tiny_root, "val", (14, 16))
    assert "002_01.png" in str(err.value) and "partner" in str(err.value)


def test_wrong_size_names_file_expected_and_actual(tiny_root):
    with pytest.raises(DataError) as err:
        load_split(tiny_root, "train", (32, 32))
    message = str(err.value)
    assert "vlr_images" in message and ".png" in message
    assert "(14, 16)" in message and "(32, 32)" in message


def test_truncated_and_garbage_files_are_named(tiny_root):
    target = split_dir(tiny_root, "train") / HR_DIR / "003_01.png"
    target.write_bytes(target.read_bytes()[:60])
    with pytest.raises(DataError) as err:
        load_split(tiny_root, "train", (14, 16))
    assert str(target) in str(err.value)
    (split_dir(tiny_root, "test") / VLR_DIR / "001_02.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as err:
        load_split(tiny_root, "test", (14, 16))
    assert "001_02.png" in str(err.value) and "unreadable" in str(err.value)


def test_missing_split_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(tmp_path, "train", (32, 32))
    assert "train_processed" in str(err.value) and "prepare" in str(err.value)


def test_check_data_cli_reports_counts_and_fails_with_code_2(tiny_root, capsys):
    assert main(["check-data", str(tiny_root), "--vlr", "14x16"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "OK" in out
    shutil.copy(split_dir(tiny_root, "train") / HR_DIR / "001_02.png",
                split_dir(tiny_root, "train") / VLR_DIR / "001_02.png")  # 128x128 where 14x16 belongs
    assert main(["check-data", str(tiny_root), "--vlr", "14x16"]) == 2
    err = capsys.readouterr().err
    assert "001_02.png" in err and "Traceback" not in err
    (split_dir(tiny_root, "train") / VLR_DIR / "001_02.png").unlink()
    assert main(["check-data", str(tiny_root), "--vlr", "14x16"]) == 2
    assert "001_02.png" in capsys.readouterr().err
    Image.new("RGB", (14, 16)).save(split_dir(tiny_root, "train") / VLR_DIR / "001_02.png")
    (split_dir(tiny_root, "val") / HR_DIR / "003_02.png").write_bytes(b"\x89PNG broken")
    assert main(["check-data", str(tiny_root), "--vlr", "14x16"]) == 2
    assert "003_02.png" in capsys.readouterr().err
