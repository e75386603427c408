"""Demo faces: layout, determinism, the data-root resolution, and the HR-vs-VLR identity gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.data import (SPLITS, VLR_DIR, generate_demo_dataset, load_split, resolve_data_root, split_dir,
                         subject_of, to_float)
from engine.data.writer import make_vlr
from engine.errors import DataError
from engine.io.paths import cache_dir
from engine.presets import Preset
from workbench.cli.main import main


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fixture_layout_manifest_and_unseen_test_identities(demo_root, demo_root_32):
    manifest = json.loads((demo_root / "manifest.json").read_text())
    assert manifest["splits"] == {"train": {"images": 45, "subjects": 9}, "val": {"images": 9, "subjects": 9},
                                  "test": {"images": 18, "subjects": 3}}
    assert manifest["vlr_size"] == [16, 16] and "antialiased" in manifest["vlr_method"]
    loaded = {s: load_split(demo_root, s, (16, 16)) for s in SPLITS}
    assert not set(loaded["test"].classes) & set(loaded["train"].classes)
    assert loaded["val"].classes == loaded["train"].classes
    assert all(subject_of(n).startswith("demo") for n in loaded["train"].names)
    # same seed, other VLR size: identical HR images, VLR at 32x32
    train32 = load_split(demo_root_32, "train", (32, 32))
    assert train32.names == loaded["train"].names and torch.equal(train32.hr, loaded["train"].hr)
    assert train32.vlr.shape[1:] == (3, 32, 32)
    # faces differ between identities and between images of one identity (nuisance)
    hr = loaded["train"].hr.float()
    assert (hr[0] - hr[1]).abs().mean() > 3 and (hr[0] - hr[-1]).abs().mean() > 3


def test_demo_data_cli_is_deterministic_in_the_seed(tmp_path, capsys):
    args = ["--identities", "5", "--per-identity", "3", "--vlr", "14x16"]
    assert main(["demo-data", str(tmp_path / "a"), *args, "--seed", "7"]) == 0
    assert "subjects" in capsys.readouterr().out
    assert main(["demo-data", str(tmp_path / "b"), *args, "--seed", "7"]) == 0
    assert main(["demo-data", str(tmp_path / "c"), *args, "--seed", "8"]) == 0
    a, b, c = (_all_files(tmp_path / x) for x in "abc")
    assert len(a) == 2 * 15 + 1 and a == b
    assert a != c
    vlr = next((split_dir(tmp_path / "a", "train") / VLR_DIR).iterdir())
    assert Image.open(vlr).size == (14, 16)
    assert main(["demo-data", str(tmp_path / "a"), *args]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(DataError):
        generate_demo_dataset(tmp_path / "d", identities=2, per_identity=3, seed=0, vlr_size=(16, 16))


def test_resolve_data_root(tmp_path):
    preset = Preset().with_changes({"data.demo_identities": 4, "data.demo_per_identity": 3, "data.demo_seed": 1,
                                    "data.vlr_width": 16, "data.vlr_height": 16})
    calls: list[tuple[int, int]] = []
    root = resolve_data_root(preset, progress=lambda done, total: calls.append((done, total)))
    assert root.parent == cache_dir() / "demo" and (root / "manifest.json").is_file()
    assert calls[-1] == (12, 12)
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    assert len(load_split(root, "test", (16, 16))) == 3
    calls.clear()
    assert resolve_data_root(preset, progress=lambda d, t: calls.append((d, t))) == root and calls == []
    other = resolve_data_root(preset.with_changes({"data.demo_seed": 2}))
    assert other != root
    assert resolve_data_root(preset, override=str(tmp_path)) == tmp_path
    missing = preset.with_changes({"data.root": str(tmp_path / "no-such-data")})
    with pytest.raises(DataError) as err:
        resolve_data_root(missing)
    assert "no-such-data" in str(err.value) and "vlr-workbench prepare" in str(err.value)


# ---- the identity gap -----------------------------------------------------------------------------

def _highpass_features(images: torch.Tensor) -> torch.Tensor:
    """Where the fine detail is: |grey - local mean| max-pooled to a 16x16 map (tolerates small shifts)."""
    grey = images.mean(1, keepdim=True)
    blur = F.avg_pool2d(F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False), 5, 1, 2, count_include_pad=False)
    return F.avg_pool2d(F.max_pool2d((grey - blur).abs(), 4), 2).flatten(1)


def _colour_features(images: torch.Tensor) -> torch.Tensor:
    return images.mean((2, 3))


def _fit_lda(x: torch.Tensor, y: torch.Tensor, reg: float = 0.1):
    """Fisher discriminant directions (regularised) fitted on the training identities."""
    classes = int(y.max()) + 1
    mean = x.mean(0)
    class_means = torch.stack([x[y == c].mean(0) for c in range(classes)])
    within = (x - class_means[y]).T @ (x - class_means[y]) / len(x)
    within = within + reg * within.trace() / len(within) * torch.eye(len(within))
    whiten = torch.linalg.inv(torch.linalg.cholesky(within))
    between = (class_means - mean).T @ (class_means - mean) / classes
    _, vectors = torch.linalg.eigh(whiten @ between @ whiten.T)
    return mean, whiten.T @ vectors[:, -(classes - 1):]


def _rank1(embed, gallery_images: torch.Tensor, probe_images: torch.Tensor, labels: torch.Tensor) -> float:
    """First image of each identity (HR) is its gallery entry; the others are probes."""
    first: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        first.setdefault(label, i)
    gallery = torch.tensor(list(first.values()))
    probes = torch.tensor([i for i in range(len(labels)) if i not in set(first.values())])
    scores = embed(probe_images[probes]) @ embed(gallery_images[gallery]).T
    return float((labels[gallery][scores.argmax(1)] == labels[probes]).float().mean())


def _vlr_from_hr(hr_u8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """VLR of the same faces at another size, made the way the dataset makes VLR."""
    return torch.stack([torch.from_numpy(np.array(make_vlr(Image.fromarray(img.permute(1, 2, 0).numpy()), size)))
                        .permute(2, 0, 1) for img in hr_u8])


def test_identity_survives_at_hr_but_not_in_bicubic_vlr(tmp_path):
    root = generate_demo_dataset(tmp_path / "gap", identities=40, per_identity=8, seed=0, vlr_size=(16, 16))
    train = [load_split(root, s, (16, 16)) for s in ("train", "val")]
    test = load_split(root, "test", (16, 16))
    assert test.num_subjects == 10  # chance rank-1 = 0.1
    train_hr = torch.cat([to_float(s.hr) for s in train])
    train_labels = torch.cat([s.labels for s in train])
    hr = to_float(test.hr)

    def bicubic(vlr_u8: torch.Tensor) -> torch.Tensor:
        return F.interpolate(to_float(vlr_u8), size=(128, 128), mode="bicubic", align_corners=False).clamp(0, 1)

    vlr32 = _vlr_from_hr(test.hr, (32, 32))

    results = {}
    for name, features in (("fine", _highpass_features), ("coarse", _colour_features)):
        mean, proj = _fit_lda(features(train_hr), train_labels)

        def embed(images, features=features, mean=mean, proj=proj):
            return F.normalize((features(images) - mean) @ proj, dim=1)

        results[name] = {"hr": _rank1(embed, hr, hr, test.labels),
                         "bicubic16": _rank1(embed, hr, bicubic(test.vlr), test.labels),
                         "bicubic32": _rank1(embed, hr, bicubic(vlr32), test.labels)}
    print(results)
    fine = results["fine"]
    assert fine["hr"] >= 0.8, results
    assert fine["hr"] >= fine["bicubic16"] + 0.25, results
    assert fine["hr"] >= fine["bicubic32"] + 0.2, results
    # skin and hair tone alone do not tell identities apart
    assert results["coarse"]["hr"] <= 0.35, results
