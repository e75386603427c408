"""Real-world faces (issue 24): unlabelled training faces for DSR only, gallery distractors, their bad input.

The LFW test prepares a small slice of ``../shared/faces/lfw-dev`` (skipped without it); the others run
on generated faces.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import presets as P
from engine.data.layout import DISTRACTORS, HR_DIR, UNLABELLED, split_dir
from engine.events import Failed, Finished
from engine.io import atomic
from engine.jobs.registry import JobRequest, run_job
from workbench.cli.main import main


def _pixels(tensor_rows: torch.Tensor) -> set[str]:
    """sha256 of each uint8 image of a [N, 3, H, W] tensor."""
    return {hashlib.sha256(row.contiguous().numpy().tobytes()).hexdigest() for row in tensor_rows.cpu()}


def _source_hashes(paths, hr_size: int = 128) -> set[str]:
    """The same hash of the HR image `prepare` makes of each source photo (lossless PNG in between)."""
    from engine.data.prepare import load_rgb, to_hr

    return {hashlib.sha256(np.ascontiguousarray(np.asarray(to_hr(load_rgb(p), hr_size)).transpose(2, 0, 1))
                           .tobytes()).hexdigest() for p in paths}


def _names(root: Path, split: str) -> set[str]:
    folder = split_dir(root, split) / HR_DIR
    return {p.name for p in folder.glob("*.png")} if folder.is_dir() else set()


def _cached_splits() -> set[str]:
    """The splits the decoded disk cache holds (one slot each)."""
    from engine.io.paths import cache_dir

    return {json.loads(m.read_text())["split"] for m in (cache_dir() / "decoded").glob("*/manifest.json")}


def _tiny_dsr_preset(tmp_path: Path):
    """cpu-demo with a tiny DSR and no recogniser-based loss (no weights needed), one epoch."""
    return P.load("cpu-demo").with_changes({
        "runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu", "dsr.epochs": 1, "dsr.batch_size": 8,
        "dsr.base_channels": 8, "dsr.residual_blocks": 1, "dsr.lambda_identity": 0.0,
        "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0})


# ----------------------------------------------------------------------------- LFW (../shared)


def test_lfw_unlabelled_faces_reach_dsr_training_only(shared_dir, tmp_path):
    from engine.data.pairs import load_dsr_train, load_split
    from engine.runtime import resolve
    from engine.train.recognition import load_splits

    lfw = shared_dir / "faces" / "lfw-dev"
    if not (lfw / "labelled").is_dir() or not (lfw / "singles").is_dir():
        pytest.skip("../shared/faces/lfw-dev is absent")
    labelled, singles = tmp_path / "labelled", tmp_path / "singles"
    for person in sorted((lfw / "labelled").iterdir())[:12]:
        shutil.copytree(person, labelled / person.name)
    singles.mkdir()
    for photo in sorted((lfw / "singles").glob("*.jpg"))[:20]:
        shutil.copy2(photo, singles / photo.name)
    root = tmp_path / "data"
    assert main(["prepare", str(labelled), str(root), "--vlr", "16x16", "--split", "60/20/20", "--seed", "3",
                 "--unlabelled", str(singles), "--distractors", "5"]) == 0

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"][UNLABELLED] == {"images": 15} and manifest["splits"][DISTRACTORS]["images"] == 5
    assert manifest[UNLABELLED]["source"] == str(singles.resolve())
    unlabelled_names, distractor_names = _names(root, UNLABELLED), _names(root, DISTRACTORS)
    assert len(unlabelled_names) == 15 and len(distractor_names) == 5 and not unlabelled_names & distractor_names
    singles_hashes = _source_hashes(sorted(singles.iterdir()))
    assert len(singles_hashes) == 20

    # fine-tuning (train + val, as the finetune and pretrain jobs load them) and evaluation (test) never see them
    preset = _tiny_dsr_preset(tmp_path).with_changes({"data.root": str(root)})
    train, val = load_splits(root, preset, resolve(preset), lambda event: None, "finetune")
    test = load_split(root, "test", (16, 16))
    for split in (train, val, test):
        assert not _pixels(split.hr) & singles_hashes, split.split
        assert not set(split.names) & (unlabelled_names | distractor_names), split.split
    assert len(train) + len(val) + len(test) == sum(manifest["splits"][s]["images"] for s in ("train", "val", "test"))
    assert _cached_splits() == {"train", "val", "test"}          # no unlabelled slot for fine-tuning

    # DSR's training pairs hold every unlabelled face, and no distractor
    dsr_train = load_dsr_train(root, (16, 16))
    unlabelled_pixels = _pixels(load_split(root, UNLABELLED, (16, 16)).hr)
    distractor_pixels = _pixels(load_split(root, DISTRACTORS, (16, 16)).hr)
    assert unlabelled_pixels | distractor_pixels == singles_hashes
    assert unlabelled_pixels <= _pixels(dsr_train.hr) and not distractor_pixels & _pixels(dsr_train.hr)
    assert len(dsr_train) == len(train) + 15 and int((dsr_train.labels < 0).sum()) == 15

    # and the train-dsr job trains on them (its resume record counts them)
    result = run_job(JobRequest("train-dsr", preset, data=str(root)), lambda event: None)
    assert isinstance(result, Finished), getattr(result, "error", "")
    last = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert last["data"]["images"] == len(train) + 15
    assert UNLABELLED in _cached_splits()


# ----------------------------------------------------------------------------- generated faces


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """Generated faces prepared with 12 unlabelled faces of other people, 6 of them held out as distractors."""
    from engine.data.demo import generate_demo_dataset

    base = tmp_path_factory.mktemp("generated")
    people = generate_demo_dataset(base / "people", identities=8, per_identity=4, seed=0, vlr_size=(16, 16))
    others = generate_demo_dataset(base / "others", identities=12, per_identity=3, seed=7, vlr_size=(16, 16))
    src, unlabelled = base / "src", base / "unlabelled" / "nested"
    for photo in people.glob("*_processed/hr_images/*.png"):
        subject = photo.name.split("_")[0]
        (src / subject).mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, src / subject / photo.name)
    unlabelled.mkdir(parents=True)
    for photo in others.glob("*_processed/hr_images/*_00.png"):      # 12 other people, one image each
        shutil.copy2(photo, unlabelled / f"other_{photo.name}")
    root = base / "data"
    assert main(["prepare", str(src), str(root), "--vlr", "16x16", "--split", "50/25/25",
                 "--unlabelled", str(base / "unlabelled"), "--distractors", "6"]) == 0
    torch.manual_seed(0)
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    weights = atomic.torch_save(base / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    return {"root": root, "src": src, "unlabelled": base / "unlabelled", "edgeface": weights}


def _evaluate(tmp_path, prepared, **options):
    preset = P.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu"})
    request = JobRequest("evaluate", preset, data=str(prepared["root"]),
                         options={"edgeface": str(prepared["edgeface"]), "bootstrap": 0, **options})
    result = run_job(request, lambda event: None)
    assert isinstance(result, Finished), getattr(result, "error", "")
    return json.loads((result.run_dir / "eval.json").read_text())


def test_distractors_grow_the_gallery_and_rank1_can_only_drop(tmp_path, prepared):
    docs = {n: _evaluate(tmp_path, prepared, distractors=n) for n in (0, 3, 6)}
    subjects = docs[0]["protocol"]["subjects"]
    assert subjects == 2 and docs[0]["protocol"]["distractors"] == 0
    available = _names(prepared["root"], DISTRACTORS)
    for n, doc in docs.items():
        protocol = doc["protocol"]
        assert protocol["subjects"] == subjects and protocol["distractors"] == n
        assert protocol["gallery_subjects"] == subjects + n
        assert protocol["gallery_images"] == docs[0]["protocol"]["gallery_images"] + n
        assert protocol["probes"] == docs[0]["protocol"]["probes"]          # distractors have no probe
        assert set(protocol["distractor_files"]) <= available and len(protocol["distractor_files"]) == n
        for row in ("bicubic", "hr"):
            assert len(doc[row]["cmc"]) == subjects + n                    # ranks over the whole gallery
    assert set(docs[3]["protocol"]["distractor_files"]) < set(docs[6]["protocol"]["distractor_files"])
    for row in ("bicubic", "hr"):
        ranks1 = [docs[n][row]["rank1"] for n in (0, 3, 6)]
        assert ranks1 == sorted(ranks1, reverse=True), (row, ranks1)
    # a random recogniser confuses probes with distractors: here rank-1 really drops (0.5 -> 0.17)
    assert docs[6]["hr"]["rank1"] < docs[0]["hr"]["rank1"]


def test_the_preset_key_sets_the_distractors_and_the_report_shows_them(tmp_path, prepared):
    preset = P.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu",
                                              "eval.distractors": 4})
    request = JobRequest("evaluate", preset, data=str(prepared["root"]),
                         options={"edgeface": str(prepared["edgeface"]), "bootstrap": 0})
    result = run_job(request, lambda event: None)
    assert isinstance(result, Finished) and result.summary["distractors"] == 4
    doc = json.loads((result.run_dir / "eval.json").read_text())
    assert doc["protocol"]["gallery_subjects"] == doc["protocol"]["subjects"] + 4
    from workbench.cli.evaluate_cmd import results_table

    assert "+ 4 distractors" in str(results_table(doc).title)


def test_unlabelled_and_distractors_stay_out_of_the_labelled_splits_and_go_to_every_fold(tmp_path, prepared):
    from engine.evaluation.folds import layout_items, subject_folds, write_fold_layout

    root = prepared["root"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["splits"][UNLABELLED]["images"] == 6 and manifest["splits"][DISTRACTORS]["images"] == 6
    extra = _names(root, UNLABELLED) | _names(root, DISTRACTORS)
    assert len(extra) == 12 and all(name.startswith("nested-other-") for name in extra)
    labelled = {name for s in ("train", "val", "test") for name in _names(root, s)}
    assert not labelled & extra and len(labelled) == 32
    items = layout_items(root)
    assert len(items) == 8                                  # the labelled people only
    fold = subject_folds(items, 2, seed=0)[0]
    data = write_fold_layout(root, tmp_path / "fold", fold, val_fraction=0.25, seed=0)
    for split in (UNLABELLED, DISTRACTORS):
        assert _names(data, split) == _names(root, split)
    assert not {n for s in ("train", "val", "test") for n in _names(data, s)} & extra
    fold_manifest = json.loads((data / "manifest.json").read_text())
    assert fold_manifest["splits"][DISTRACTORS] == {"images": 6, "subjects": 6}
    assert fold_manifest[UNLABELLED]["images"] == 6


def test_degraded_vlr_covers_the_unlabelled_faces_and_check_data_lists_them(tmp_path, prepared, capsys):
    root = tmp_path / "degraded"
    assert main(["prepare", str(prepared["src"]), str(root), "--vlr", "16x16", "--degrade",
                 "--unlabelled", str(prepared["unlabelled"]), "--distractors", "2"]) == 0
    drawn = json.loads((root / "manifest.json").read_text())["degrade"]["images"]
    assert {k.split("/")[0] for k in drawn} == {"train", "val", "test", UNLABELLED, DISTRACTORS}
    assert sum(k.startswith(f"{UNLABELLED}/") for k in drawn) == 10
    capsys.readouterr()
    assert main(["check-data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "unlabelled" in out and "distractors" in out


# ----------------------------------------------------------------------------- bad input


def _prepare(tmp_path, src, unlabelled, *extra) -> list[str]:
    return ["prepare", str(src), str(tmp_path / "new"), "--vlr", "16x16", "--unlabelled", str(unlabelled), *extra]


def test_an_unlabelled_folder_without_images_is_one_message(tmp_path, prepared, capsys):
    empty = tmp_path / "empty"
    (empty / "deep").mkdir(parents=True)
    (empty / "deep" / "notes.txt").write_text("no faces here")
    assert main(_prepare(tmp_path, prepared["src"], empty)) == 2
    err = capsys.readouterr().err
    assert f"--unlabelled {empty}" in err and "holds no images" in err and "leave --unlabelled out" in err
    assert "Traceback" not in err and not (tmp_path / "new").exists()
    assert main(_prepare(tmp_path, prepared["src"], tmp_path / "missing")) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_more_distractors_than_unlabelled_images_is_one_message(tmp_path, prepared, capsys):
    assert main(_prepare(tmp_path, prepared["src"], prepared["unlabelled"], "--distractors", "13")) == 2
    err = capsys.readouterr().err
    assert "--distractors 13" in err and "12 image(s)" in err and "at most --distractors 12" in err
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".*"))
    code = main(["prepare", str(prepared["src"]), str(tmp_path / "new"), "--vlr", "16x16", "--distractors", "2"])
    assert code == 2 and "add --unlabelled DIR" in capsys.readouterr().err.replace("Add", "add")


def test_an_unlabelled_folder_overlapping_the_source_is_refused(tmp_path, prepared, capsys):
    assert main(_prepare(tmp_path, prepared["src"], prepared["src"] / next(iter(sorted(
        p.name for p in prepared["src"].iterdir()))))) == 2
    assert "overlap" in capsys.readouterr().err
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy2(next(prepared["src"].glob("*/*.png")), twin / "copy.png")
    assert main(_prepare(tmp_path, prepared["src"], twin)) == 2
    err = capsys.readouterr().err
    assert "is the same file as" in err and "copy.png" in err and not (tmp_path / "new").exists()


def test_evaluate_and_pipeline_refuse_more_distractors_than_the_data_holds(tmp_path, prepared, demo_root, capsys):
    preset = P.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu"})
    preset_file = P.save(preset, tmp_path / "tiny.toml")
    common = ["--preset", str(preset_file), "--edgeface", str(prepared["edgeface"])]
    assert main(["evaluate", *common, "--data", str(prepared["root"]), "--distractors", "7"]) == 2
    err = capsys.readouterr().err
    assert "--distractors 7" in err and "holds 6" in err and "at most --distractors 6" in err
    assert main(["evaluate", *common, "--data", str(demo_root), "--distractors", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds none" in err and "--unlabelled DIR --distractors N" in err
    assert main(["pipeline", *common, "--data", str(prepared["root"]), "--distractors", "9"]) == 2
    assert "--distractors 9" in capsys.readouterr().err
    assert main(["evaluate", *common, "--data", str(prepared["root"]), "--distractors", "-1"]) == 2
    assert ">= 0" in capsys.readouterr().err
    bad_key = P.save(preset.with_changes({"eval.distractors": 50}), tmp_path / "keyed.toml")
    assert main(["evaluate", "--preset", str(bad_key), "--edgeface", str(prepared["edgeface"]),
                 "--data", str(prepared["root"])]) == 2
    assert "eval.distractors = 50" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())   # nothing created


def test_pipeline_folds_share_one_gallery_of_distractors_and_dsr_trains_on_the_unlabelled(tmp_path, prepared):
    tiny = {"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu", "dsr.epochs": 1,
            "dsr.batch_size": 16, "dsr.base_channels": 8, "dsr.residual_blocks": 1, "finetune.stage1_epochs": 1,
            "finetune.stage2_epochs": 1, "finetune.batch_size": 16, "finetune.pretrain_epochs": 0,
            "runtime.edgeface_weights": str(prepared["edgeface"])}
    request = JobRequest("pipeline", P.load("cpu-demo").with_changes(tiny), data=str(prepared["root"]),
                         options={"baselines": True, "folds": 2, "distractors": 3, "bootstrap": 50})
    result = run_job(request, lambda event: None)
    assert isinstance(result, Finished) and not result.stopped, getattr(result, "error", "")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["options"]["distractors"] == 3
    from engine.runs.run_dir import linked_file

    def at(path: str) -> Path:                      # summary.json links are relative to the pipeline directory
        return linked_file(result.run_dir, path)

    galleries = []
    for record in summary["folds"]:
        doc = json.loads(at(record["eval_json"]).read_text())
        protocol = doc["protocol"]
        assert protocol["distractors"] == 3 and protocol["gallery_subjects"] == protocol["subjects"] + 3
        assert set(doc["comparisons"]) >= {"dsr_vs_bicubic", "dsr_vs_bicubic_base"}   # five rows, one gallery
        galleries.append(protocol["distractor_files"])
        last = torch.load(at(record["stages"]["train-dsr"]) / "last.pt", map_location="cpu", weights_only=True)
        fold_train = len(_names(at(record["data_root"]), "train"))
        assert last["data"]["images"] == fold_train + 6                     # the 6 unlabelled faces too
    assert galleries[0] == galleries[1] and len(galleries[0]) == 3


@pytest.mark.parametrize("unlabelled", [True, False])
def test_dsr_unlabelled_decides_whether_dsr_trains_on_the_unlabelled_faces(tmp_path, prepared, unlabelled):
    """``dsr.unlabelled = false`` (a lever of issue 38's protocol matrix): DSR trains on the labelled train split
    only, on the same dataset, and its log says the unlabelled faces were left out."""
    tiny = {"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu", "dsr.epochs": 1,
            "dsr.batch_size": 16, "dsr.base_channels": 8, "dsr.residual_blocks": 1, "dsr.lambda_identity": 0.0,
            "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0, "dsr.unlabelled": unlabelled}
    said: list[str] = []
    request = JobRequest("train-dsr", P.load("cpu-demo").with_changes(tiny), data=str(prepared["root"]))
    result = run_job(request, lambda event: said.append(getattr(event, "message", "")))
    assert isinstance(result, Finished), getattr(result, "error", "")
    last = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=True)
    train = len(_names(prepared["root"], "train"))
    assert last["data"]["images"] == train + (6 if unlabelled else 0)
    assert any("unlabelled faces left out" in line for line in said) == (not unlabelled)
