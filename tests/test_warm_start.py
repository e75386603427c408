"""dsr.init_weights: a DSR run that starts from an earlier run's weights (the warm-start lever of issue 24)."""

from __future__ import annotations

import json

import pytest
import torch

from engine import presets
from engine.events import Finished, Log
from engine.jobs.registry import JobRequest, run_job
from workbench.cli.main import main

from tiny import tiny_dsr_data, tiny_dsr_preset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dsr_data(tmp_path_factory.mktemp("warm") / "data", identities=12, per_identity=6)


SIZE = {"dsr.base_channels": 16, "dsr.residual_blocks": 2}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, data):
    """A finished 8-epoch run: the weights to start from."""
    top = tmp_path_factory.mktemp("earlier")
    preset = tiny_dsr_preset(top / "runs", **SIZE, **{"dsr.epochs": 8, "dsr.learning_rate": 2e-3,
                                                          "dsr.ema_decay": 0.9})
    result = run_job(JobRequest("train-dsr", preset, str(data), {"run_dir": str(top / "run")}), lambda e: None)
    assert isinstance(result, Finished) and not result.stopped
    return top / "run"


def _val_psnr(run_dir) -> list[float]:
    return [json.loads(line)["psnr"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "val"]


def test_a_warm_start_begins_where_the_earlier_run_ended(data, earlier, tmp_path):
    best = torch.load(earlier / "best.pt", weights_only=False)
    # a learning rate too small to move the weights: the first epoch's val PSNR is the loaded network's
    frozen = tiny_dsr_preset(tmp_path / "runs", **SIZE, **{"dsr.epochs": 1, "dsr.learning_rate": 1e-12,
                                                   "dsr.warmup_epochs": 0, "dsr.init_weights": str(earlier / "best.pt")})
    events = []
    warm = run_job(JobRequest("train-dsr", frozen, str(data), {"run_dir": str(tmp_path / "warm")}), events.append)
    cold = run_job(JobRequest("train-dsr", frozen.with_changes({"dsr.init_weights": ""}), str(data),
                              {"run_dir": str(tmp_path / "cold")}), lambda e: None)
    assert isinstance(warm, Finished) and isinstance(cold, Finished)
    assert _val_psnr(tmp_path / "warm")[0] == pytest.approx(best["val_psnr"], abs=1e-3)
    assert _val_psnr(tmp_path / "cold")[0] < best["val_psnr"] - 0.3      # random weights are far from it
    summary = json.loads((tmp_path / "warm" / "summary.json").read_text())
    assert summary["init_weights"] == str(earlier / "best.pt")
    assert json.loads((tmp_path / "cold" / "summary.json").read_text())["init_weights"] is None
    said = [e.message for e in events if isinstance(e, Log) and "warm start" in e.message]
    assert said and f"epoch {best['epoch']}" in said[0]
    last = torch.load(tmp_path / "warm" / "last.pt", weights_only=False)
    assert last["init_weights"] == str(earlier / "best.pt")        # kept for a resume
    assert last["optimizer"]["state"][0]["step"].item() == last["loop"]["global_step"]   # optimiser started fresh


def test_warm_start_keeps_training_and_improves_on_a_cold_start(data, earlier, tmp_path):
    changes = {"dsr.epochs": 1, "dsr.learning_rate": 1e-3, "dsr.warmup_epochs": 0}
    warm = tiny_dsr_preset(tmp_path / "runs", **SIZE, **changes, **{"dsr.init_weights": str(earlier / "best.pt")})
    for name, preset in (("warm", warm), ("cold", warm.with_changes({"dsr.init_weights": ""}))):
        assert isinstance(run_job(JobRequest("train-dsr", preset, str(data), {"run_dir": str(tmp_path / name)}),
                                  lambda e: None), Finished)
    assert _val_psnr(tmp_path / "warm")[-1] > _val_psnr(tmp_path / "cold")[-1] + 0.3


@pytest.mark.parametrize("change, expected", [
    ({"dsr.base_channels": 8}, "base_channels 16 vs 8"),
    ({"data.vlr_width": 16, "data.vlr_height": 16}, "vlr_size [8, 8] vs [16, 16]"),
])
def test_a_warm_start_of_other_sizes_is_refused_before_any_run_exists(data, earlier, tmp_path, capsys, change,
                                                                      expected):
    preset = tiny_dsr_preset(tmp_path / "runs", **{**SIZE, "dsr.init_weights": str(earlier / "best.pt"), **change})
    code = main(["train-dsr", "--preset", str(presets.save(preset, tmp_path / "p.toml")), "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "dsr.init_weights" in err and expected in err and "empty the key" in err
    assert not (tmp_path / "runs").exists()


def test_a_missing_warm_start_file_is_one_message(data, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "best.pt"
    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.init_weights": str(missing)})
    code = main(["train-dsr", "--preset", str(presets.save(preset, tmp_path / "p.toml")), "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "dsr.init_weights" in err and str(missing) in err and not (tmp_path / "runs").exists()


def test_pipeline_folds_refuse_a_warm_start(data, earlier, tmp_path, capsys):
    preset = tiny_dsr_preset(tmp_path / "runs", **SIZE, **{"dsr.init_weights": str(earlier / "best.pt")})
    code = main(["pipeline", "--preset", str(presets.save(preset, tmp_path / "p.toml")), "--data", str(data),
                 "--folds", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "dsr.init_weights" in err and "--folds" in err and not (tmp_path / "runs").exists()
