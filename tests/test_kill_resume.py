"""SIGKILL a real train-dsr, finetune and pipeline process at random moments, resume each, and check
that it completes with every epoch logged exactly once and the same final weights as a run that was
never interrupted.

The default is 6 kills (2 per job) to keep CI short; ``VLR_KILL_ROUNDS=20`` runs the issue's 20.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from engine.io import atomic
from engine import presets as P
from engine.models.edgeface import build_edgeface, edgeface_checkpoint
from engine.runs.status import run_state
from engine.runs.records import read_metrics

ROUNDS = int(os.environ.get("VLR_KILL_ROUNDS", "6"))
JOBS = ("train-dsr", "finetune", "pipeline")
TINY = {"data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "runtime.num_threads": 1,
        "dsr.epochs": 3, "dsr.batch_size": 4, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
        "dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "dsr.early_stop_patience": 0, "finetune.early_stop_patience": 0,
        "finetune.stage1_epochs": 1, "finetune.stage2_epochs": 2, "finetune.batch_size": 4,
        "runtime.edgeface_variant": "edgeface_xxs"}
WEIGHT_TOLERANCE = 1e-5   # max |difference| of any weight between a killed-and-resumed and a straight run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from engine.data.demo import generate_demo_dataset

    base = tmp_path_factory.mktemp("kill")
    data = generate_demo_dataset(base / "data", identities=6, per_identity=4, seed=0, vlr_size=(16, 16), hr_size=128)
    torch.manual_seed(0)
    weights = atomic.torch_save(base / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    preset = P.load("cpu-demo").with_changes({**TINY, "runtime.edgeface_weights": str(weights)})
    return base, data, preset


def _command(job: str, preset_file: Path, data: Path, run_dir: Path) -> list[str]:
    args = [sys.executable, "-m", "workbench.cli.main", job, "--preset", str(preset_file), "--data", str(data)]
    if job == "finetune":
        args += ["--edgeface", str(preset_file.parent / "edgeface.pt")]
    if job != "pipeline":
        args += ["--run-dir", str(run_dir)]
    return args


def _final_weights(job: str, run_dir: Path) -> dict[str, torch.Tensor]:
    if job == "pipeline":
        summary = json.loads((run_dir / "summary.json").read_text())
        run_dir = Path(summary["stages"]["finetune"])
    return torch.load(run_dir / "last.pt", weights_only=True)["state_dict"]


def _pipeline_dir(runs_dir: Path) -> Path | None:
    found = sorted(runs_dir.glob("*-pipeline"))
    return found[-1] if found else None


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)


def _check_epochs_once(run_dir: Path, expected: Counter) -> None:
    seen = Counter((r["stage"], r["epoch"]) for r in read_metrics(run_dir) if r["split"] == "val")
    assert seen == expected, f"{run_dir}: {sorted(seen.items())}"


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(setup):
    base, data, preset = setup
    rng = random.Random(1234)
    reference, durations = {}, {}
    for job in JOBS:   # uninterrupted runs: the weights and epochs to match, and how long a run takes
        folder = base / f"straight-{job}"
        preset_file = P.save(preset.with_changes({"runtime.runs_dir": str(folder / "runs")}), folder / "p.toml")
        (folder / "edgeface.pt").write_bytes((base / "edgeface.pt").read_bytes())
        t0 = time.perf_counter()
        done = _run(_command(job, preset_file, data, folder / "run"))
        durations[job] = time.perf_counter() - t0
        assert done.returncode == 0, done.stderr[-2000:]
        run_dir = _pipeline_dir(folder / "runs") if job == "pipeline" else folder / "run"
        reference[job] = _final_weights(job, run_dir)

    completions = 0
    for round_ in range(ROUNDS):
        job = JOBS[round_ % len(JOBS)]
        folder = base / f"kill-{round_}"
        preset_file = P.save(preset.with_changes({"runtime.runs_dir": str(folder / "runs")}), folder / "p.toml")
        (folder / "edgeface.pt").write_bytes((base / "edgeface.pt").read_bytes())
        run_dir = folder / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(_command(job, preset_file, data, run_dir), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * durations[job])   # a random moment of the run
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if job == "pipeline":
            run_dir = _pipeline_dir(folder / "runs")
        if run_dir is not None and (run_dir / "status.json").is_file():
            assert run_state(run_dir) in ("dead", "finished")   # never "running" once the process is gone
        if run_dir is not None and (run_dir / ("summary.json" if job == "pipeline" else "last.pt")).is_file():
            resumed = _run([sys.executable, "-m", "workbench.cli.main", job, "--resume", str(run_dir)])
        else:   # killed before the first checkpoint: nothing to resume, start again
            resumed = _run(_command(job, preset_file, data, folder / "run"))
            run_dir = _pipeline_dir(folder / "runs") if job == "pipeline" else folder / "run"
        if "nothing to resume" in resumed.stderr:   # the pipeline had already finished before the kill
            resumed = subprocess.CompletedProcess(resumed.args, 0)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        completions += 1
        assert run_state(run_dir) == "finished"
        weights = _final_weights(job, run_dir)
        for key, value in reference[job].items():
            if value.is_floating_point():
                assert (weights[key] - value).abs().max().item() <= WEIGHT_TOLERANCE, (job, round_, key)
        stage_dirs = ([Path(p) for p in json.loads((run_dir / "summary.json").read_text())["stages"].values() if p]
                      if job == "pipeline" else [run_dir])
        for stage_dir in stage_dirs:
            if stage_dir.name.endswith("train-dsr") or stage_dir == run_dir and job == "train-dsr":
                _check_epochs_once(stage_dir, Counter({("dsr", 1): 1, ("dsr", 2): 1, ("dsr", 3): 1}))
                assert json.loads((stage_dir / "summary.json").read_text())["epochs_run"] == 3
            elif stage_dir.name.endswith("finetune") or stage_dir == run_dir and job == "finetune":
                _check_epochs_once(stage_dir, Counter({("stage1", 1): 1, ("stage2", 1): 1, ("stage2", 2): 1}))
                assert json.loads((stage_dir / "summary.json").read_text())["epochs_run"] == 3
        assert not list(run_dir.glob(".*.tmp"))
    assert completions == ROUNDS
