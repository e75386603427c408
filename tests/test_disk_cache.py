"""The decoded on-disk cache: reused across starts, rebuilt when a file changes, never trusts a torn write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.data import disk_cache, pairs
from engine.data.pairs import clear_cache, load_split
from engine.errors import DataError

HR, VLR = 32, (8, 8)


def _write_dataset(root: Path, n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """n random HR/VLR pairs in the layout's train split; returns the HR pixels by name (HWC)."""
    rng = np.random.default_rng(seed)
    hr_dir, vlr_dir = root / "train_processed" / "hr_images", root / "train_processed" / "vlr_images"
    hr_dir.mkdir(parents=True)
    vlr_dir.mkdir(parents=True)
    pixels = {}
    for i in range(n):
        name = f"{i % 3:03d}_{i:02d}.png"
        hr = rng.integers(0, 256, (HR, HR, 3), dtype=np.uint8)
        Image.fromarray(hr).save(hr_dir / name)
        Image.fromarray(rng.integers(0, 256, (VLR[1], VLR[0], 3), dtype=np.uint8)).save(vlr_dir / name)
        pixels[name] = hr
    return pixels


def _load(root: Path, **kwargs):
    clear_cache()  # a new process: only the disk cache can help
    return load_split(root, "train", VLR, HR, **kwargs)


def _slot(root: Path) -> Path:
    slots = [p for p in disk_cache.decoded_dir().iterdir() if p.is_dir()]
    assert len(slots) == 1, slots
    return slots[0]


def _expected(pixels: dict[str, np.ndarray], names: list[str]) -> torch.Tensor:
    return torch.from_numpy(np.stack([pixels[n] for n in names])).permute(0, 3, 1, 2)


@pytest.fixture
def counting_decode(monkeypatch):
    calls = []
    real = pairs._decode

    def decode(path, size, kind):
        calls.append(Path(path).name)
        return real(path, size, kind)

    monkeypatch.setattr(pairs, "_decode", decode)
    return calls


def test_second_start_reads_the_memory_mapped_cache_without_decoding(tmp_path, counting_decode):
    pixels = _write_dataset(tmp_path / "data")
    messages, progress = [], []
    first = _load(tmp_path / "data", log=messages.append)
    assert len(counting_decode) == 12 and any("decoding train" in m for m in messages)
    assert torch.equal(first.hr, _expected(pixels, first.names))
    slot = _slot(tmp_path / "data")
    manifest = json.loads((slot / "manifest.json").read_text())
    assert manifest["names"] == first.names and manifest["hr_size"] == HR

    counting_decode.clear()
    second = _load(tmp_path / "data", progress=lambda done, total: progress.append((done, total)))
    assert counting_decode == [] and progress == [(12, 12)]
    assert torch.equal(second.hr, first.hr) and torch.equal(second.vlr, first.vlr)
    assert second.hr.shape == (6, 3, HR, HR) and second.hr.is_contiguous()
    maps = Path("/proc/self/maps")
    if maps.exists():  # the tensor is a view of the file, not a copy in memory
        assert manifest["hr"]["file"] in maps.read_text()
    second.hr[0, 0, 0, 0] = 255 - int(second.hr[0, 0, 0, 0])  # copy-on-write: the file is not changed
    assert torch.equal(_load(tmp_path / "data").hr, first.hr)


def test_changed_image_rebuilds_the_slot_in_place(tmp_path, counting_decode):
    pixels = _write_dataset(tmp_path / "data")
    first = _load(tmp_path / "data")
    old_files = sorted(p.name for p in _slot(tmp_path / "data").glob("*.npy"))
    name = first.names[2]
    changed = np.full((HR, HR, 3), 7, dtype=np.uint8)
    Image.fromarray(changed).save(tmp_path / "data" / "train_processed" / "hr_images" / name)
    pixels[name] = changed

    counting_decode.clear()
    second = _load(tmp_path / "data")
    assert len(counting_decode) == 12  # the whole split decoded again
    assert torch.equal(second.hr, _expected(pixels, second.names))
    assert int(second.hr[2].float().mean()) == 7
    new_files = sorted(p.name for p in _slot(tmp_path / "data").glob("*.npy"))
    assert len(new_files) == 2 and not set(new_files) & set(old_files)  # old arrays removed
    assert torch.equal(first.hr[0], second.hr[0])  # the first load's map still reads its own pixels


def test_added_image_rebuilds_with_the_new_pair(tmp_path):
    _write_dataset(tmp_path / "data", n=4)
    assert len(_load(tmp_path / "data")) == 4
    for folder, size in (("hr_images", (HR, HR)), ("vlr_images", VLR)):
        Image.new("RGB", size, (1, 2, 3)).save(tmp_path / "data" / "train_processed" / folder / "009_99.png")
    again = _load(tmp_path / "data")
    assert len(again) == 5 and again.names[-1] == "009_99.png"
    assert again.vlr[-1, :, 0, 0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "garbage_manifest", "wrong_bytes", "leftover_temp"])
def test_torn_or_damaged_cache_is_rebuilt_never_trusted(tmp_path, counting_decode, damage):
    pixels = _write_dataset(tmp_path / "data")
    first = _load(tmp_path / "data")
    slot = _slot(tmp_path / "data")
    manifest = json.loads((slot / "manifest.json").read_text())
    hr_file = slot / manifest["hr"]["file"]
    if damage == "truncate":
        with open(hr_file, "r+b") as handle:
            handle.truncate(hr_file.stat().st_size // 2)
    elif damage == "no_manifest":  # a crash after the arrays, before the manifest
        (slot / "manifest.json").unlink()
    elif damage == "garbage_manifest":
        (slot / "manifest.json").write_text('{"version": 1, "fingerp')
    elif damage == "wrong_bytes":  # an array swapped for another of the right shape but a different length
        manifest["hr"]["bytes"] += 1
        (slot / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "leftover_temp":
        (slot / ".hr-deadbeef.x.tmp").write_bytes(b"\x93NUMPY half a file")
    del first

    counting_decode.clear()
    again = _load(tmp_path / "data")
    assert torch.equal(again.hr, _expected(pixels, again.names))
    if damage == "leftover_temp":
        assert counting_decode == []  # a temp file is not the cache: the manifest's arrays are used
    else:
        assert len(counting_decode) == 12
        assert json.loads((slot / "manifest.json").read_text())["version"] == disk_cache.FORMAT_VERSION
    counting_decode.clear()
    assert torch.equal(_load(tmp_path / "data").hr, again.hr) and counting_decode == []


def test_failed_build_leaves_no_manifest_and_no_temp_files(tmp_path, monkeypatch):
    pixels = _write_dataset(tmp_path / "data")
    bad = tmp_path / "data" / "train_processed" / "hr_images" / "001_04.png"
    good = bad.read_bytes()
    bad.write_bytes(good[:40])  # truncated PNG: the build stops with a DataError naming the file
    with pytest.raises(DataError, match="001_04.png"):
        _load(tmp_path / "data")
    slot = _slot(tmp_path / "data")
    assert not (slot / "manifest.json").exists() and list(slot.iterdir()) == []
    bad.write_bytes(good)
    os.utime(bad, ns=(bad.stat().st_atime_ns, bad.stat().st_mtime_ns + 10**9))
    loaded = _load(tmp_path / "data")
    assert torch.equal(loaded.hr, _expected(pixels, loaded.names))


def test_unusable_cache_directory_decodes_in_memory_and_says_so(tmp_path, monkeypatch):
    pixels = _write_dataset(tmp_path / "data")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("VLR_WORKBENCH_CACHE_DIR", str(blocker))
    messages = []
    loaded = _load(tmp_path / "data", log=messages.append)
    assert torch.equal(loaded.hr, _expected(pixels, loaded.names))
    assert any("decoding into memory instead" in m for m in messages)


def test_disabled_by_environment_writes_nothing(tmp_path, monkeypatch):
    _write_dataset(tmp_path / "data")
    monkeypatch.setenv(disk_cache.DISABLE_ENV, "0")
    assert len(_load(tmp_path / "data")) == 6
    assert not disk_cache.decoded_dir().exists()


def test_a_write_failure_mid_build_still_returns_the_pixels(tmp_path, monkeypatch):
    pixels = _write_dataset(tmp_path / "data")

    def full_disk(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(disk_cache.atomic, "write_json", full_disk)
    messages = []
    loaded = _load(tmp_path / "data", log=messages.append)
    assert torch.equal(loaded.hr, _expected(pixels, loaded.names))
    assert any("failed" in m and "decoding into memory instead" in m for m in messages)
    assert not (_slot(tmp_path / "data") / "manifest.json").exists()
