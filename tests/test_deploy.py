"""Issue 35: export a finished pipeline to ONNX, enrol a gallery, identify faces (ONNX Runtime alone).

One tiny pipeline (demo faces, a random recogniser, AMP off so that evaluate's fp32 embeddings are the ones the
fp32 graphs give) and one export with --int8 are made per module; the tests read them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.layout import HR_DIR, VLR_DIR, subject_of
from engine.evaluation.gallery_rule import gallery_members
from workbench.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """(pipeline run dir, data root, model folder): a finished tiny pipeline and its export with --int8."""
    import torch

    from engine import presets
    from engine.data.demo import generate_demo_dataset
    from engine.events import Finished
    from engine.io import atomic
    from engine.jobs.registry import JobRequest, run_job
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    base = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLR_WORKBENCH_CONFIG_DIR", str(base / "config"))
        patch.setenv("VLR_WORKBENCH_CACHE_DIR", str(base / "cache"))
        root = generate_demo_dataset(base / "data", identities=20, per_identity=5, seed=1, vlr_size=(16, 16),
                                     hr_size=128)
        torch.manual_seed(0)
        weights = atomic.torch_save(base / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
        preset = presets.load("cpu-demo").with_changes({
            "data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "runtime.amp": "off",
            "dsr.epochs": 1, "dsr.batch_size": 16, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
            "finetune.stage1_epochs": 1, "finetune.stage2_epochs": 1, "finetune.batch_size": 16,
            "runtime.edgeface_variant": "edgeface_xxs", "runtime.edgeface_weights": str(weights),
            "runtime.runs_dir": str(base / "runs")})
        result = run_job(JobRequest("pipeline", preset, data=str(root)), lambda event: None)
        assert isinstance(result, Finished) and not result.stopped, getattr(result, "error", "")
        model = base / "model"
        assert main(["export", str(result.run_dir), "--out", str(model), "--int8"]) == 0
    return Path(result.run_dir), root, model


def _eval_doc(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    return json.loads(Path(summary["eval_json"]).read_text())


def _probe_files(root: Path, per_subject: int = 1) -> list[Path]:
    """The VLR probes of evaluate's protocol (every test image that does not enrol; the preset enrols 1 each)."""
    names = sorted(p.name for p in (root / "test_processed" / HR_DIR).iterdir())
    _gallery, probes = gallery_members(names, [subject_of(n) for n in names], per_subject)
    return [root / "test_processed" / VLR_DIR / names[i] for i in probes]


def test_export_writes_both_graphs_int8_and_a_card_with_hashes_parity_and_the_evaluation(shipped):
    from engine.deploy.card import file_sha256, model_id

    run, _root, model = shipped
    card = json.loads((model / "model.json").read_text())
    assert sorted(card["files"]) == ["gallery.int8.onnx", "gallery.onnx", "probe.int8.onnx", "probe.onnx"]
    assert all(file_sha256(model / name) == digest for name, digest in card["files"].items())
    assert card["model_id"] == model_id(card["files"])
    assert card["probe"]["size"] == [16, 16] and card["probe"]["dtype"] == "uint8"
    assert card["probe"]["layout"] == "NHWC" and card["probe"]["channels"] == "RGB"
    assert card["gallery"]["size"] == [128, 128] and card["output"]["dim"] == 512
    doc = _eval_doc(run)
    assert card["threshold"] == doc["protocol"]["threshold"]
    assert card["evaluation"]["rows"]["dsr"]["rank1"] == doc["dsr"]["rank1"]
    assert card["source"]["dsr"] == doc["protocol"]["dsr"]
    for graph in ("probe", "gallery"):
        assert card["parity"][graph]["min_cosine"] >= 0.999
        assert card["parity"][graph]["images"] == len(list((_root / "test_processed" / HR_DIR).iterdir()))
        assert 0.9 < card["parity"][f"{graph}.int8"]["min_cosine"] <= 1.0 + 1e-6
    assert "depthwise convolutions" in card["int8_calibration"]["method"]


def test_int8_quantises_the_dense_convolutions_and_keeps_depthwise_ones_and_attention_in_float(shipped):
    import onnx

    _run, _root, model = shipped
    graph = onnx.load(str(model / "probe.int8.onnx")).graph
    made_by = {out: node for node in graph.node for out in node.output}
    stored = {tensor.name for tensor in graph.initializer}

    def int8_weight(name: str) -> bool:          # a stored int8 tensor, dequantised into this input
        node = made_by.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in stored

    def weight_is_dequantized(node) -> bool:
        return int8_weight(node.input[1])

    convs = [n for n in graph.node if n.op_type == "Conv"]
    grouped = [n for n in convs if next((a.i for a in n.attribute if a.name == "group"), 1) > 1]
    dense = [n for n in convs if n not in grouped]
    assert grouped and dense and len(dense) > 10                         # DSR's and EdgeFace's dense ones
    assert all(weight_is_dequantized(n) for n in dense)
    assert not any(weight_is_dequantized(n) for n in grouped)
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    assert matmuls and not any(int8_weight(i) for n in matmuls for i in n.input)
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".model.")]   # no staged leftovers


def test_the_probe_graph_takes_any_batch_and_gives_unit_embeddings_equal_to_pytorch(shipped):
    import torch

    from engine.deploy.graphs import ProbeGraph
    from engine.deploy.onnx_model import DeployedModel
    from engine.models.dsr import load_dsr
    from engine.models.edgeface import load_recogniser

    run, root, model = shipped
    doc = _eval_doc(run)
    deployed = DeployedModel(model)
    faces = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in _probe_files(root)[:7]])
    for batch in (faces[:1], faces):
        out = deployed.embed("probe", batch)
        assert out.shape == (len(batch), 512)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    graph = ProbeGraph(load_dsr(doc["protocol"]["dsr"])[0], load_recogniser(doc["protocol"]["rows"]["dsr"]
                                                                             ["recogniser_file"])).eval()
    with torch.no_grad():
        reference = graph(torch.from_numpy(faces)).numpy()
    assert float((reference * deployed.embed("probe", faces)).sum(axis=1).min()) > 0.999


def test_identify_on_the_prepared_split_gives_evaluates_dsr_rank1(shipped, tmp_path, capsys):
    run, root, model = shipped
    gallery = tmp_path / "gallery.npz"
    assert main(["enroll", str(root), "--model", str(model), "--out", str(gallery)]) == 0
    capsys.readouterr()
    doc = _eval_doc(run)
    probes = _probe_files(root, doc["protocol"]["gallery_per_subject"])
    assert len(probes) == doc["protocol"]["probes"]
    assert main(["identify", *map(str, probes), "--model", str(model), "--gallery", str(gallery), "--json",
                 "--top", "2"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(p) for p in probes]
    correct = sum(subject_of(Path(r["image"]).name) == r["top"][0]["identity"] for r in results)
    assert correct / len(results) == pytest.approx(doc["dsr"]["rank1"])
    threshold = json.loads((model / "model.json").read_text())["threshold"]
    assert all(len(r["top"]) == 2 and r["top"][0]["score"] >= r["top"][1]["score"] for r in results)
    assert all(r["accepted"] == (r["top"][0]["score"] >= threshold) for r in results)


def test_enroll_and_identify_run_where_torch_cannot_be_imported(shipped, tmp_path):
    _run, root, model = shipped
    gallery = tmp_path / "g.npz"
    probe = _probe_files(root)[0]
    script = ("import sys\n"
              "tried = []\n"
              "class NoTorch:\n"                    # every attempt to import torch is recorded, and fails
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'torch' or name.startswith('torch.'):\n"
              "            tried.append(name)\n"
              "            raise ImportError('no torch on this box')\n"
              "sys.meta_path.insert(0, NoTorch())\n"
              "from workbench.cli.main import main\n"
              f"assert main(['enroll', {str(root)!r}, '--model', {str(model)!r}, '--out', {str(gallery)!r}]) == 0\n"
              f"code = main(['identify', {str(probe)!r}, '--model', {str(model)!r}, '--gallery', {str(gallery)!r},"
              " '--json', '--int8'])\n"
              "assert not tried and 'torch' not in sys.modules, tried\n"
              "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout[done.stdout.index("["):])
    assert results[0]["image"] == str(probe) and len(results[0]["top"]) == 5


def test_a_probe_photo_and_a_gallery_photo_become_the_faces_prepare_makes(tmp_path):
    from engine.data.prepare import prepare_dataset
    from engine.deploy.faces import hr_face, vlr_face

    src = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for person in ("ann", "bob", "cid"):
        (src / person).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (150, 190, 3), dtype=np.uint8)).save(src / person / f"{i}.png")
    prepare_dataset(src, tmp_path / "data", vlr_size=(16, 16), split=(0.5, 0.0, 0.5), seed=0)
    written = sorted((tmp_path / "data").glob("*_processed/hr_images/ann_*.png"))
    assert written
    name = written[0].name                   # ann_0.png from photos/ann/0.png
    photo = src / "ann" / f"{name.split('_', 1)[1]}"
    np.testing.assert_array_equal(hr_face(photo, 128), np.asarray(Image.open(written[0])))
    vlr_file = written[0].parent.parent / VLR_DIR / name
    np.testing.assert_array_equal(vlr_face(photo, (16, 16), 128), np.asarray(Image.open(vlr_file)))
    np.testing.assert_array_equal(vlr_face(vlr_file, (16, 16), 128), np.asarray(Image.open(vlr_file)))


def test_enroll_a_folder_of_people_names_each_by_its_folder(shipped, tmp_path, capsys):
    from engine.deploy.gallery import load_gallery

    _run, root, model = shipped
    people = tmp_path / "people"
    for hr in sorted((root / "test_processed" / HR_DIR).iterdir())[:6]:
        folder = people / f"person-{subject_of(hr.name)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.open(hr).resize((160, 200)).save(folder / hr.name.replace(".png", ".jpg"))
    assert main(["enroll", str(people), "--model", str(model), "--out", str(tmp_path / "g.npz")]) == 0
    gallery = load_gallery(tmp_path / "g.npz")
    assert list(gallery.identities) == sorted(p.name for p in people.iterdir())
    assert len(gallery.source_file) == 6 and gallery.embeddings.shape == (len(gallery.identities), 512)
    np.testing.assert_allclose(np.linalg.norm(gallery.embeddings, axis=1), 1.0, atol=1e-5)
    assert gallery.model_id == json.loads((model / "model.json").read_text())["model_id"]


def _error(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_bad_deploy_inputs_are_one_message_and_exit_2_with_nothing_written(shipped, tmp_path, capsys):
    run, root, model = shipped
    gallery = tmp_path / "g.npz"
    assert main(["enroll", str(root), "--model", str(model), "--out", str(gallery)]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases = [
        (["identify", str(broken), "--model", str(model), "--gallery", str(gallery)], "broken.png"),
        (["identify", str(broken), "--model", str(tmp_path / "nowhere"), "--gallery", str(gallery)],
         "does not exist"),
        (["enroll", str(tmp_path / "empty"), "--model", str(model), "--out", str(tmp_path / "e.npz")],
         "is not a folder"),
    ]
    (tmp_path / "empty2").mkdir()
    cases.append((["enroll", str(tmp_path / "empty2"), "--model", str(model), "--out", str(tmp_path / "e.npz")],
                  "no face photo"))
    other = tmp_path / "other-model"
    shutil.copytree(model, other)
    card = json.loads((other / "model.json").read_text())
    card["model_id"] = "0" * 16
    (other / "model.json").write_text(json.dumps(card))
    cases.append((["identify", str(_probe_files(root)[0]), "--model", str(other), "--gallery", str(gallery)],
                  "was enrolled with model"))
    tampered = tmp_path / "tampered"
    shutil.copytree(model, tampered)
    with open(tampered / "probe.onnx", "ab") as handle:
        handle.write(b"\0")
    cases.append((["identify", str(_probe_files(root)[0]), "--model", str(tampered), "--gallery", str(gallery)],
                  "does not match the SHA-256"))
    for argv, says in cases:
        assert main(argv) == 2, argv
        text = _error(capsys)
        assert says in text and "Traceback" not in text, (argv, text)
    assert not (tmp_path / "e.npz").exists()


def test_export_refusals_leave_the_out_folder_as_it_was(shipped, tmp_path, capsys):
    run, _root, model = shipped
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--out", str(taken)]) == 2
    assert "already exists" in _error(capsys) and (taken / "notes.txt").read_text() == "mine"
    dsr_run = Path(_eval_doc(run)["protocol"]["dsr"]).parent   # the pipeline's train-dsr stage
    assert main(["export", str(dsr_run), "--out", str(tmp_path / "a")]) == 2
    assert "training run" in _error(capsys) and not (tmp_path / "a").exists()
    bicubic_only = tmp_path / "bicubic-run"
    bicubic_only.mkdir()
    shutil.copy(run / "preset.toml", bicubic_only / "preset.toml")
    doc = _eval_doc(run)
    doc["protocol"]["dsr"] = None
    (bicubic_only / "eval.json").write_text(json.dumps(doc))
    assert main(["export", str(bicubic_only), "--out", str(tmp_path / "b")]) == 2
    assert "no DSR" in _error(capsys) and not (tmp_path / "b").exists()
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "not a run directory" in _error(capsys) and not (tmp_path / "c").exists()


def test_force_replaces_an_export_but_never_files_it_does_not_list(shipped, tmp_path, capsys):
    run, _root, _model = shipped
    out = tmp_path / "model"
    assert main(["export", str(run), "--out", str(out)]) == 0
    first = json.loads((out / "model.json").read_text())
    assert first["opset"] == 18 and first["int8"] is False and "int8_calibration" not in first
    assert main(["export", str(run), "--out", str(out)]) == 2
    refused = _error(capsys)
    assert "already holds an exported model" in refused and "--force" in refused
    (out / "people.npz").write_bytes(b"a gallery")
    assert main(["export", str(run), "--out", str(out), "--force"]) == 2
    assert "people.npz" in _error(capsys) and (out / "people.npz").read_bytes() == b"a gallery"
    (out / "people.npz").unlink()
    assert main(["export", str(run), "--out", str(out), "--force"]) == 0
    again = json.loads((out / "model.json").read_text())
    assert again["model_id"] == first["model_id"] and sorted(p.name for p in out.iterdir()) == [
        "gallery.onnx", "model.json", "probe.onnx"]
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(run), "--out", str(tmp_path / "afile" / "m")]) == 2
    assert "is a file" in _error(capsys)
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--opset", "13"]) == 2
    assert "from 18 to 23" in _error(capsys) and not (tmp_path / "m").exists()


def test_enroll_reads_a_split_without_a_manifest_and_odd_image_modes(shipped, tmp_path):
    from engine.deploy.faces import hr_face, vlr_face
    from engine.deploy.gallery import enroll, enrolment_faces
    from engine.deploy.onnx_model import DeployedModel

    _run, root, model = shipped
    bare = tmp_path / "bare"
    shutil.copytree(root / "test_processed", bare / "test_processed")        # the layout, no manifest.json
    faces, origin = enrolment_faces(bare, 1)
    subjects = {subject_of(p.name) for p in (root / "test_processed" / HR_DIR).iterdir()}
    assert {identity for identity, _ in faces} == subjects and len(faces) == len(subjects)
    assert "gallery images evaluate enrols" in origin
    assert len(enroll(DeployedModel(model), faces, origin).identities) == len(subjects)
    source = np.asarray(Image.open(next((root / "test_processed" / HR_DIR).iterdir())).convert("L"))
    for mode, image in (("L", Image.fromarray(source)), ("RGBA", Image.fromarray(source).convert("RGBA")),
                        ("I;16", Image.fromarray(source.astype(np.uint16) * 257))):
        path = tmp_path / f"face-{mode.replace(';', '')}.png"
        image.save(path)
        assert hr_face(path, 128).shape == (128, 128, 3) and hr_face(path, 128).dtype == np.uint8, mode
        assert vlr_face(path, (16, 16), 128).shape == (16, 16, 3), mode
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    assert main(["identify", str(path), "--model", str(model), "--gallery", str(tmp_path / "array.npz")]) == 2


@pytest.mark.parametrize("floor", [0.5, float("nan")])
def test_an_export_below_the_parity_floor_fails_and_writes_nothing(shipped, tmp_path, monkeypatch, floor):
    from engine import presets
    from engine.deploy import conversion
    from engine.events import Failed
    from engine.jobs.registry import JobRequest, run_job

    run, _root, _model = shipped
    real = conversion.parity
    monkeypatch.setattr(conversion, "parity", lambda a, b: {**real(a, b), "min_cosine": floor})
    out = tmp_path / "model"
    result = run_job(JobRequest("export", presets.load(run / "preset.toml"),
                                options={"run": str(run), "out": str(out)}), lambda event: None)
    assert isinstance(result, Failed) and f"smallest cosine {floor:.5f} < 0.999" in result.error
    assert not out.exists() and not list(tmp_path.glob(".model.*"))


async def test_E_on_the_runs_tab_exports_a_finished_pipeline_and_says_why_for_a_training_run(shipped):
    from textual.widgets import DataTable, TabbedContent

    from workbench.app.widgets.run_history import RunHistory

    from app_helpers import capture_notes, make_app, wait_for

    run, _root, _model = shipped
    app = make_app(str(run / "preset.toml"), remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        notes = capture_notes(app)
        app.query_one(TabbedContent).active = "tab-runs"
        history = app.query_one(RunHistory)
        table = history.query_one("#runs-table", DataTable)
        table.focus()
        await wait_for(pilot, lambda: any(row.job == "train-dsr" for row in history.shown), what="the runs")
        names = [row.name for row in history.shown]
        table.move_cursor(row=[row.job for row in history.shown].index("train-dsr"))
        await pilot.press("E")
        await wait_for(pilot, lambda: any("E exports a finished pipeline" in n for n in notes), what="the reason")
        table.move_cursor(row=names.index(run.name))
        await pilot.press("E")
        await wait_for(pilot, lambda: any(n.startswith("export finished") for n in notes), timeout=240,
                       what="the export")
        assert str(run / "export") in next(n for n in notes if n.startswith("export finished"))
        card = json.loads((run / "export" / "model.json").read_text())
        assert card["source"]["run"] == str(run) and card["parity"]["probe"]["min_cosine"] >= 0.999
