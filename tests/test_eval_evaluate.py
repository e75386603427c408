"""The evaluate job and CLI on the tiny demo data, with a random EdgeFace and a tiny DSR written here."""

from __future__ import annotations

import json

import pytest
import torch

from engine.io import atomic
from engine import presets as P
from engine.events import Failed, Finished, Progress
from engine.jobs.registry import JobRequest, run_job

RATE_KEYS = ("rank1", "rank5", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "open_set_accuracy",
             "open_set_rejected", "open_set_false_accept", "ssim")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random edgeface_xxs checkpoint and a tiny 16x16 -> 128 DSR checkpoint (plus one for 32x32)."""
    from engine.models.dsr import DSRNet
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    recogniser = atomic.torch_save(folder / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    paths = {"edgeface": recogniser}
    for size in (16, 32):
        net = DSRNet((size, size), 128, base_channels=8, residual_blocks=1)
        paths[f"dsr{size}"] = atomic.torch_save(folder / f"dsr{size}.pt", {
            "kind": "dsr", "config": net.config, "state_dict": net.state_dict(), "epoch": 1})
    return paths


def _preset(tmp_path, **changes):
    base = {"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu", "data.vlr_width": 16,
            "data.vlr_height": 16}
    return P.load("cpu-demo").with_changes({**base, **changes})


def _run(preset, demo_root, options):
    events = []
    result = run_job(JobRequest("evaluate", preset, data=str(demo_root), options=options), events.append)
    return result, events


def _fake_train_dsr_run(runs_dir, preset_name, checkpoint):
    run = runs_dir / f"20990101-000000-{preset_name}-train-dsr"
    run.mkdir(parents=True)
    (run / "preset.toml").write_text("")
    (run / "best.pt").write_bytes(checkpoint.read_bytes())
    return run


def test_evaluate_writes_all_three_columns_with_the_latest_dsr(tmp_path, demo_root, weights):
    preset = _preset(tmp_path)
    dsr_run = _fake_train_dsr_run(tmp_path / "runs", preset.name, weights["dsr16"])
    result, events = _run(preset, demo_root, {"edgeface": str(weights["edgeface"])})
    assert isinstance(result, Finished), getattr(result, "error", "")
    doc = json.loads((result.run_dir / "eval.json").read_text())
    protocol = doc["protocol"]
    assert protocol["dsr"] == str(dsr_run / "best.pt")
    assert (protocol["subjects"], protocol["gallery_images"], protocol["probes"]) == (3, 3, 15)
    assert protocol["threshold"] == preset.eval.threshold and protocol["seed"] == preset.runtime.seed
    for variant in ("dsr", "bicubic", "hr"):
        body = doc[variant]
        for key in RATE_KEYS:
            assert 0.0 <= body[key] <= 1.0, (variant, key)
        assert body["open_set_accuracy"] + body["open_set_rejected"] + body["open_set_false_accept"] == \
            pytest.approx(1.0)
        assert len(body["cmc"]) == 3 and body["cmc"][0] == body["rank1"] and body["cmc"][-1] == 1.0
        assert body["cmc"] == sorted(body["cmc"])
    assert doc["hr"]["psnr"] is None and doc["hr"]["ssim"] == pytest.approx(1.0)
    # the tiny DSR starts near bicubic (global bicubic skip, small residual)
    assert 10.0 < doc["bicubic"]["psnr"] < 40.0
    assert abs(doc["dsr"]["psnr"] - doc["bicubic"]["psnr"]) < 3.0
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["bicubic_rank1"] == doc["bicubic"]["rank1"]
    record = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["split"] == "test" and record["hr_rank1"] == doc["hr"]["rank1"]
    assert {e.epoch for e in events if isinstance(e, Progress) and e.stage == "eval"} == {1, 2, 3}


def test_dsr_of_another_size_is_a_user_error(tmp_path, demo_root, weights):
    result, _ = _run(_preset(tmp_path), demo_root, {"dsr": str(weights["dsr32"]), "edgeface": str(weights["edgeface"])})
    assert isinstance(result, Failed) and result.traceback is None
    assert "dsr32.pt" in result.error and "(16, 16)" in result.error


def test_cli_without_dsr_prints_bicubic_and_hr_side_by_side(tmp_path, demo_root, weights, capsys):
    from workbench.cli import evaluate_cmd
    from workbench.cli.main import main

    preset_file = P.save(_preset(tmp_path), tmp_path / "tiny.toml")
    code = main(["evaluate", "--preset", str(preset_file), "--data", str(demo_root),
                 "--edgeface", str(weights["edgeface"])])
    out = capsys.readouterr().out
    assert code == 0
    assert "only bicubic and hr were evaluated" in out
    assert "rank-1" in out and "HR (upper bound)" in out and "bicubic" in out and "eval.json" in out
    doc = json.loads(next((tmp_path / "runs").glob("*-tiny-evaluate/eval.json")).read_text())
    assert doc["dsr"] is None and doc["bicubic"] is not None and doc["hr"] is not None
    rows = {row[0]: row[1:] for row in evaluate_cmd.table_rows(doc)}
    assert {dsr for dsr, _bicubic, _hr in rows.values()} == {"-"}   # the DSR column is empty
    assert rows["rank-1"][1].startswith(f"{100 * doc['bicubic']['rank1']:.1f}% [") and rows["PSNR (dB)"][2] == "-"
    assert evaluate_cmd._cell(0.25, "rate") == "25.0%" and evaluate_cmd._cell(23.456, "db") == "23.46"


def test_cli_missing_checkpoint_exits_2(tmp_path, demo_root, weights, capsys):
    from workbench.cli.main import main

    preset_file = P.save(_preset(tmp_path), tmp_path / "tiny.toml")
    code = main(["evaluate", "--preset", str(preset_file), "--data", str(demo_root),
                 "--dsr", str(tmp_path / "nope.pt"), "--edgeface", str(weights["edgeface"])])
    assert code == 2
    assert "nope.pt" in capsys.readouterr().err
