"""Data-parallel training under torchrun (2 CPU processes, gloo): one run directory, metrics that
match a 1-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import presets as P
from engine.runs.records import read_metrics

TINY = {"data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "runtime.num_threads": 1,
        "dsr.epochs": 2, "dsr.base_channels": 8, "dsr.residual_blocks": 1, "dsr.lambda_identity": 0.0,
        "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "finetune.stage1_epochs": 1, "finetune.stage2_epochs": 1, "runtime.edgeface_variant": "edgeface_xxs",
        # augmentation off: the comparison isolates the data-parallel arithmetic (sharding, all-reduce, DDP)
        "dsr.rotation_p": 0.0, "dsr.color_jitter_p": 0.0, "finetune.flip_p": 0.0, "finetune.jitter_brightness": 0.0,
        "finetune.jitter_contrast": 0.0, "finetune.jitter_saturation": 0.0, "finetune.jitter_hue": 0.0,
        "finetune.rotation_degrees": 0.0}
PER_RANK_BATCH = 4


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> Path:
    from engine.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("ddp") / "data", identities=6, per_identity=4, seed=0,
                                 vlr_size=(16, 16), hr_size=128)


def _preset_file(tmp_path: Path, name: str, batch: int) -> Path:
    preset = P.load("cpu-demo").with_changes({**TINY, "dsr.batch_size": batch, "finetune.batch_size": batch,
                                              "runtime.runs_dir": str(tmp_path / f"runs-{name}")})
    return P.save(preset.with_changes({}), tmp_path / f"{name}.toml")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "workbench.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def _why(result: subprocess.CompletedProcess) -> str:
    """A failed torchrun's own lines (an abort's cause is printed before torchrun's summary), then its tail."""
    causes = [line for line in result.stderr.splitlines()
              if any(k in line for k in ("terminate", "what()", "Error", "error:", "Abort", "gloo"))]
    return "\n".join(causes[:20]) + "\n...\n" + result.stderr[-1500:]


def _val(run_dir: Path, key: str) -> list[tuple[str, int, float]]:
    return [(r["stage"], r["epoch"], r[key]) for r in read_metrics(run_dir) if r["split"] == "val"]


def test_train_dsr_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path, ddp_data):
    one = _cli("train-dsr", "--preset", str(_preset_file(tmp_path, "one", 2 * PER_RANK_BATCH)), "--data",
               str(ddp_data), "--run-dir", str(tmp_path / "r1"), cwd=tmp_path)
    two = _cli("train-dsr", "--preset", str(_preset_file(tmp_path, "two", PER_RANK_BATCH)), "--data",
               str(ddp_data), "--run-dir", str(tmp_path / "r2"), "--nproc", "2", cwd=tmp_path)
    assert one.returncode == 0, _why(one)
    assert two.returncode == 0, _why(two)
    summary = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 2 * PER_RANK_BATCH
    assert summary["global_step"] == json.loads((tmp_path / "r1" / "summary.json").read_text())["global_step"]
    # one run directory, written once: each epoch's records appear exactly once
    assert not (tmp_path / "runs-two").exists() or not any((tmp_path / "runs-two").iterdir())
    a, b = _val(tmp_path / "r1", "psnr"), _val(tmp_path / "r2", "psnr")
    assert [x[:2] for x in a] == [x[:2] for x in b] == [("dsr", 1), ("dsr", 2)]
    for (_, _, p1), (_, _, p2) in zip(a, b):
        assert abs(p1 - p2) < 0.05          # stated tolerance: 0.05 dB (float summation order differs)
    la, lb = _val(tmp_path / "r1", "loss"), _val(tmp_path / "r2", "loss")
    for (_, _, l1), (_, _, l2) in zip(la, lb):
        assert abs(l1 - l2) / l1 < 0.02     # and val loss within 2 %
    status = json.loads((tmp_path / "r2" / "status.json").read_text())
    assert status["state"] == "finished" and status["world_size"] == 2
    assert not (tmp_path / "r2" / "owner.lock").exists()


def test_finetune_on_two_processes_matches_one_process(tmp_path, ddp_data):
    from engine.io import atomic
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    torch.manual_seed(0)
    weights = atomic.torch_save(tmp_path / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    runs = {}
    for name, batch, extra in (("one", 2 * PER_RANK_BATCH, ()), ("two", PER_RANK_BATCH, ("--nproc", "2"))):
        result = _cli("finetune", "--preset", str(_preset_file(tmp_path, name, batch)), "--data", str(ddp_data),
                      "--edgeface", str(weights), "--run-dir", str(tmp_path / name), *extra, cwd=tmp_path)
        assert result.returncode == 0, _why(result)
        runs[name] = tmp_path / name
    a, b = _val(runs["one"], "loss"), _val(runs["two"], "loss")
    assert [x[:2] for x in a] == [x[:2] for x in b] == [("stage1", 1), ("stage2", 1)]
    for (_, _, l1), (_, _, l2) in zip(a, b):
        assert abs(l1 - l2) / l1 < 0.03     # stated tolerance: 3 % of the val loss
    summary = json.loads((runs["two"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 2 * PER_RANK_BATCH


def test_nproc_launcher_removes_its_own_flag():
    from workbench.cli.run_flags import _without_nproc

    assert _without_nproc(["train-dsr", "--nproc", "2", "--epochs", "3"]) == ["train-dsr", "--epochs", "3"]
    assert _without_nproc(["finetune", "--nproc=4"]) == ["finetune"]
