"""`prepare --degrade`: the 'same camera' dataset, deterministic in its seed and recorded in the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.data.camera import parse_spec
from engine.data.prepare import prepare_dataset


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """5 subjects x 3 textured photos (64 wide x 80 tall), Yale-style names."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for s in range(5):
        for j in range(3):
            base = rng.integers(0, 255, (10, 8, 3)).astype(np.uint8)
            image = Image.fromarray(base).resize((64, 80), Image.BILINEAR)
            image.save(folder / f"subject{s:02d}.pose{j}.png")
    return folder


def _vlr_arrays(root):
    return {p.relative_to(root).as_posix(): np.asarray(Image.open(p)) for p in sorted(root.glob("*/vlr_images/*.png"))}


def test_degraded_prepare_is_deterministic_in_its_seed_and_recorded(tmp_path, photos):
    spec = parse_spec("blur=0.5:1.5,noise=2:6,jpeg=30:60")
    a = prepare_dataset(photos, tmp_path / "a", vlr_size=(16, 16), seed=3, degrade=spec)
    prepare_dataset(photos, tmp_path / "b", vlr_size=(16, 16), seed=3, degrade=spec)
    c = prepare_dataset(photos, tmp_path / "c", vlr_size=(16, 16), seed=4, degrade=spec)
    clean = prepare_dataset(photos, tmp_path / "clean", vlr_size=(16, 16), seed=3)
    va, vb, vclean = _vlr_arrays(tmp_path / "a"), _vlr_arrays(tmp_path / "b"), _vlr_arrays(tmp_path / "clean")
    assert len(va) == 15 and va.keys() == vb.keys() == vclean.keys()
    assert all(np.array_equal(va[k], vb[k]) for k in va)                          # same seed: same pixels
    assert all(not np.array_equal(va[k], vclean[k]) for k in va)                  # degraded, every image
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest == a and "degrade" not in clean
    record = manifest["degrade"]
    assert record["spec"] == "blur=0.5:1.5,noise=2:6,jpeg=30:60"
    assert record["blur_sigma"] == [0.5, 1.5] and record["noise_sigma"] == [2.0, 6.0]
    assert record["jpeg_quality"] == [30, 60] and "JPEG" in record["method"]
    images = record["images"]
    assert len(images) == 15 and set(images) == {k.replace("_processed/vlr_images", "") for k in va}
    for drawn in images.values():
        assert 0.5 <= drawn["sigma_x"] <= 1.5 and 2 <= drawn["noise"] <= 6 and 30 <= drawn["quality"] <= 60
    assert len({d["quality"] for d in images.values()}) > 3                       # drawn per image
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["degrade"] == record
    assert c["degrade"]["images"] != record["images"]                              # another seed, other draws
    # the HR images are untouched by the degradation
    hr = sorted((tmp_path / "a").glob("*/hr_images/*.png"))
    assert all(np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / "clean" / p.relative_to(tmp_path / "a"))))
               for p in hr)


def test_cli_flag_default_and_bad_spec(tmp_path, photos, capsys):
    from workbench.cli.main import main

    assert main(["prepare", str(photos), str(tmp_path / "d"), "--vlr", "16x16", "--degrade"]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["degrade"]["jpeg_quality"] == [40, 90] and len(manifest["degrade"]["images"]) == 15
    with pytest.raises(SystemExit) as exc:
        main(["prepare", str(photos), str(tmp_path / "e"), "--vlr", "16x16", "--degrade", "fog=1"])
    assert exc.value.code == 2 and "fog=1" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
