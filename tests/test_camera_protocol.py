"""The camera protocols of an evaluation (clean, same camera, unseen camera) in eval.json, the CLI, `runs` and the
tips; a probe camera on a degraded dataset refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch

from engine import presets as P
from engine.data.demo import generate_demo_dataset
from engine.errors import DataError
from engine.events import Finished
from engine.io import atomic
from engine.jobs.registry import JobRequest, run_job
from engine.runs.index import display_cells, read_row
from engine.tips import propose_tips
from workbench.cli.main import main

UNSEEN = "motion=1:3,resize=bilinear,poisson=0.5:1.5,jpeg=25:50"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from engine.models.dsr import DSRNet
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    folder = tmp_path_factory.mktemp("camera-weights")
    torch.manual_seed(0)
    edgeface = atomic.torch_save(folder / "xxs.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    net = DSRNet((16, 16), 128, base_channels=8, residual_blocks=1)
    dsr = atomic.torch_save(folder / "dsr.pt", {"kind": "dsr", "config": net.config, "state_dict": net.state_dict(),
                                                "epoch": 1})
    return {"edgeface": edgeface, "dsr": dsr}


def _preset(tmp_path, **changes):
    return P.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu",
                                            "data.vlr_width": 16, "data.vlr_height": 16, **changes})


def _evaluate(preset, root, weights):
    return run_job(JobRequest("evaluate", preset, data=str(root), options={
        "dsr": str(weights["dsr"]), "edgeface": str(weights["edgeface"]), "bootstrap": 0}), lambda e: None)


def test_the_unseen_camera_degrades_the_probes_only_and_is_recorded(tmp_path, demo_root, weights):
    clean = _evaluate(_preset(tmp_path), demo_root, weights)
    unseen = _evaluate(_preset(tmp_path, **{"eval.probe_degrade": UNSEEN, "degrade.enabled": True}), demo_root, weights)
    assert isinstance(clean, Finished) and isinstance(unseen, Finished), getattr(unseen, "error", "")
    a, b = (json.loads((r.run_dir / "eval.json").read_text()) for r in (clean, unseen))
    assert a["protocol"]["camera"] == {"protocol": "clean", "probes": None, "dataset": None, "training": None,
                                       "probe_seed": None}
    camera = b["protocol"]["camera"]
    assert camera["protocol"] == "unseen camera" and camera["probes"] == UNSEEN and camera["dataset"] is None
    assert camera["training"].startswith("blur=0.2:1.5@0.9") and camera["probe_seed"] == 42
    assert b["hr"]["rank1"] == a["hr"]["rank1"]                       # the gallery and HR probes stay HR
    assert b["bicubic"]["psnr"] < a["bicubic"]["psnr"] - 0.3          # the probes are worse faces
    again = _evaluate(_preset(tmp_path, **{"eval.probe_degrade": UNSEEN, "degrade.enabled": True}), demo_root, weights)
    assert json.loads((again.run_dir / "eval.json").read_text())["bicubic"]["psnr"] == b["bicubic"]["psnr"]  # seeded
    assert "unseen camera (" + UNSEEN + ")" in unseen.summary["camera"]
    row = read_row(unseen.run_dir)
    assert row.camera == "unseen camera" and "(unseen cam)" in display_cells(row)[1]
    assert read_row(clean.run_dir).camera == "" and display_cells(read_row(clean.run_dir))[1] == "evaluate"


def test_same_camera_is_read_from_the_dataset_and_a_probe_camera_on_it_is_refused(tmp_path, weights, capsys):
    from engine.data.camera import parse_spec
    from engine.data.prepare import prepare_dataset

    faces = generate_demo_dataset(tmp_path / "faces", identities=8, per_identity=4, seed=0, vlr_size=(16, 16),
                                  hr_size=128)
    photos = tmp_path / "photos"
    for path in sorted(faces.glob("*_processed/hr_images/*.png")):     # the HR faces as a photo folder
        (photos / path.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        (photos / path.name.split("_")[0] / path.name).write_bytes(path.read_bytes())
    root = tmp_path / "camera-data"
    prepare_dataset(photos, root, vlr_size=(16, 16), seed=0, split=(0.5, 0.25, 0.5), degrade=parse_spec("default"))
    same = _evaluate(_preset(tmp_path), root, weights)
    assert isinstance(same, Finished), getattr(same, "error", "")
    camera = json.loads((same.run_dir / "eval.json").read_text())["protocol"]["camera"]
    assert camera["protocol"] == "same camera" and camera["dataset"] == "blur=0.3:1.5,noise=0:6,jpeg=40:90"

    runs = tmp_path / "refused-runs"
    preset_file = P.save(_preset(tmp_path).with_changes({"runtime.runs_dir": str(runs)}), tmp_path / "p.toml")
    for command in ("evaluate", "pipeline"):
        code = main([command, "--preset", str(preset_file), "--data", str(root), "--probe-degrade", UNSEEN,
                     *(["--dsr", str(weights["dsr"]), "--edgeface", str(weights["edgeface"])]
                       if command == "evaluate" else [])])
        err = capsys.readouterr()
        text = err.out + err.err
        assert code == 2, text
        assert UNSEEN in text and "blur=0.3:1.5,noise=0:6,jpeg=40:90" in text and "Traceback" not in text
    assert not runs.exists() or not any(runs.iterdir())              # nothing written


def test_a_bad_probe_spec_is_exit_2_naming_the_flag(tmp_path, capsys):
    code = main(["evaluate", "--preset", "cpu-demo", "--probe-degrade", "fog=2"])
    text = "".join(capsys.readouterr())
    assert code == 2 and "--probe-degrade" in text and "fog=2" in text and "Traceback" not in text


def _history(psnr_gain: float):
    return [{"job": "train-dsr", "stage": "dsr", "split": "val", "epoch": e, "psnr": 24.0 + psnr_gain,
             "bicubic_psnr": 24.0} for e in (1, 2, 3)]


def _evaluation(protocol: str, dsr: float, hr: float):
    return {"dsr": {"rank1": dsr}, "bicubic": {"rank1": dsr - 0.02}, "hr": {"rank1": hr},
            "protocol": {"camera": {"protocol": protocol, "probes": UNSEEN if protocol == "unseen camera" else None,
                                    "dataset": None, "training": None}}}


def test_the_camera_tip_proposes_the_degradation_levers_when_psnr_is_fine_and_rank1_is_not():
    preset = P.load("cpu-real")
    tips = {t.rule: t for t in propose_tips(_history(1.2), preset, evaluation=_evaluation("unseen camera", 0.3, 0.9))}
    tip = tips["camera"]
    assert tip.patch["degrade.enabled"] is True and "finetune.lambda_distill" not in tip.patch   # the lever study
    assert tip.patch["finetune.head"] == "adaface" and tip.patch["degrade.blur_sigma"] == (0.2, 2.0)
    assert "low_accuracy" not in tips and "30.0% rank-1" in tip.observed and UNSEEN in tip.observed
    P.load("cpu-real").with_changes(tip.patch)                      # a patch the sweep can queue: valid keys
    same = {t.rule: t for t in propose_tips(_history(1.2), preset, evaluation=_evaluation("same camera", 0.3, 0.9))}
    assert set(same["camera"].patch) == {"finetune.lambda_distill", "finetune.head"}   # it trains on that camera
    assert "camera" not in {t.rule for t in propose_tips(_history(1.2), preset,
                                                        evaluation=_evaluation("clean", 0.3, 0.9))}
    assert "camera" not in {t.rule for t in propose_tips(_history(1.2), preset,
                                                        evaluation=_evaluation("unseen camera", 0.85, 0.9))}
    done = preset.with_changes(tip.patch)          # once applied, the tip has nothing left to propose
    assert "camera" not in {t.rule for t in propose_tips(_history(1.2), done,
                                                        evaluation=_evaluation("unseen camera", 0.3, 0.9))}

