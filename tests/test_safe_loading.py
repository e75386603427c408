"""Checkpoints are read with torch's weights-only unpickler: a malicious pickle runs nothing, on every load path."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

from engine import presets
from engine.io import atomic
from engine.io.checkpoints import load_checkpoint
from engine.data.demo import generate_demo_dataset
from engine.errors import WeightsError
from engine.jobs.registry import JobRequest, run_job
from engine.models.dsr import load_dsr
from engine.models.edgeface import build_edgeface, edgeface_checkpoint, load_edgeface, load_recogniser
from workbench.cli.main import main


class _CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: the file appears only if the pickle's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _evil(path: Path, marker: Path, **fields) -> Path:
    """A .pt shaped like a DSR/EdgeFace checkpoint whose pickle would create ``marker``."""
    torch.save({"kind": "dsr", "config": {}, "state_dict": {}, **fields, "payload": _CreatesFile(marker)}, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny dataset (VLR 8x8, HR 32), a random xxs recogniser file and a preset for seconds-long runs."""
    base = tmp_path_factory.mktemp("safe")
    root = generate_demo_dataset(base / "data", identities=4, per_identity=3, seed=0, vlr_size=(8, 8), hr_size=32)
    torch.manual_seed(0)
    weights = atomic.torch_save(base / "xxs.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    preset = presets.load("cpu-demo").with_changes({
        "data.vlr_width": 8, "data.vlr_height": 8, "data.hr_size": 32, "data.root": str(root),
        "dsr.base_channels": 4, "dsr.residual_blocks": 1, "dsr.batch_size": 4, "dsr.epochs": 1,
        "dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "finetune.stage1_epochs": 1, "finetune.stage2_epochs": 1, "finetune.batch_size": 4,
        "finetune.jitter_hue": 0.0, "runtime.device": "cpu", "runtime.runs_dir": str(base / "runs")})
    preset_file = presets.save(preset, base / "tiny.toml")
    return {"base": base, "root": root, "weights": weights, "preset": preset, "preset_file": preset_file}


def test_the_payload_is_live_under_the_old_full_unpickler(tmp_path):
    """Control: the same file loaded the old way (weights_only=False) does create the marker."""
    marker = tmp_path / "marker"
    torch.load(_evil(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_runs_nothing_and_says_why(tmp_path):
    marker = tmp_path / "marker"
    evil = _evil(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsError) as err:
        load_checkpoint(evil, what="DSR checkpoint")
    assert not marker.exists()
    text = str(err.value)
    assert str(evil) in text and "never runs code" in text and "damaged" in text
    assert "weights_only=False" not in text  # torch's advice to turn the protection off is not passed on
    for loader in (lambda: load_dsr(evil), lambda: load_edgeface(evil), lambda: load_recogniser(evil)):
        with pytest.raises(WeightsError):
            loader()
    assert not marker.exists()


def test_evaluate_dsr_and_edgeface_refuse_a_malicious_file(tiny, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = _evil(tmp_path / "evil.pt", marker)
    common = ["evaluate", "--preset", str(tiny["preset_file"]), "--data", str(tiny["root"])]
    assert main([*common, "--edgeface", str(tiny["weights"]), "--dsr", str(evil)]) == 2
    assert str(evil) in capsys.readouterr().err
    assert main([*common, "--edgeface", str(evil)]) == 2
    assert str(evil) in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_a_malicious_last_pt(tiny, tmp_path, capsys):
    """A run directory with a planted last.pt: `train-dsr --resume` exits 2 and runs nothing."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    presets.save(tiny["preset"], run_dir / "preset.toml")
    marker = tmp_path / "marker"
    _evil(run_dir / "last.pt", marker, optimizer={}, epochs=1)
    assert main(["train-dsr", "--resume", str(run_dir)]) == 2
    assert str(run_dir / "last.pt") in capsys.readouterr().err
    assert not marker.exists()


def test_real_checkpoints_of_both_trainers_load_weights_only(tiny):
    """What train-dsr and finetune write (best.pt, last.pt with optimiser/EMA/RNG state) needs no extra globals."""
    base, preset, weights = tiny["base"], tiny["preset"], str(tiny["weights"])
    for job in ("train-dsr", "finetune"):
        result = run_job(JobRequest(job, preset, options={"run_dir": str(base / job), "edgeface": weights}),
                         lambda event: None, None)
        assert result.run_dir == base / job, getattr(result, "error", result)
        for name in ("best.pt", "last.pt"):
            checkpoint = load_checkpoint(base / job / name, what="checkpoint")
            assert checkpoint["kind"] == ("dsr" if job == "train-dsr" else "edgeface")
        assert {"optimizer", "scheduler", "rng"} <= set(load_checkpoint(base / job / "last.pt", what="checkpoint"))
    model, _ = load_dsr(base / "train-dsr" / "best.pt")
    assert model.config["base_channels"] == 4
    assert load_edgeface(base / "finetune" / "best.pt").variant == "edgeface_xxs"


def test_authors_int8_weights_still_load(shared_dir):
    path = shared_dir / "weights" / "edgeface_xxs_q.pt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    assert load_edgeface(path).variant == "edgeface_xxs"


@pytest.mark.parametrize("content", [b"", b"\x80\x02}q\x00", b"PK\x03\x04garbage", bytes(range(256)) * 4])
def test_damaged_files_are_weights_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="bad.pt"):
        load_checkpoint(path, what="DSR checkpoint")


def test_a_truncated_checkpoint_and_a_directory_are_named(tmp_path):
    good = atomic.torch_save(tmp_path / "good.pt", {"kind": "dsr", "w": torch.randn(64, 64)})
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.pt.*damaged"):
        load_checkpoint(tmp_path / "cut.pt", what="DSR checkpoint")
    with pytest.raises(WeightsError, match="is a directory"):
        load_checkpoint(tmp_path, what="DSR checkpoint")
    with pytest.raises(WeightsError, match="is a directory"):
        load_edgeface(tmp_path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt", what="DSR checkpoint")
