"""benchmarks/bench_protocols.py (issue 38's protocol matrix) on generated faces: the one-at-a-time design, one
dataset per split seed, a distractors cell re-scoring its twin's models, DSR without the unlabelled faces, and a
second run measuring nothing again."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = ["dsr.epochs=1", "dsr.batch_size=16", "dsr.base_channels=8", "dsr.residual_blocks=1",
        "finetune.stage1_epochs=1", "finetune.stage2_epochs=1", "finetune.batch_size=16", 'runtime.device="cpu"']


def _bench():
    spec = importlib.util.spec_from_file_location("bench_protocols", REPO / "benchmarks" / "bench_protocols.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_protocols"] = module            # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """labelled/<person>/*.png and singles/*.png, as lfw-dev lays them out, and random EdgeFace weights."""
    from engine.data.demo import generate_demo_dataset
    from engine.io import atomic
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    base = tmp_path_factory.mktemp("faces")
    people = generate_demo_dataset(base / "people", identities=8, per_identity=4, seed=0, vlr_size=(16, 16))
    others = generate_demo_dataset(base / "others", identities=12, per_identity=3, seed=7, vlr_size=(16, 16))
    root = base / "lfw-like"
    for photo in people.glob("*_processed/hr_images/*.png"):
        person = root / "labelled" / photo.name.split("_")[0]
        person.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, person / photo.name)
    (root / "singles").mkdir()
    for photo in others.glob("*_processed/hr_images/*_00.png"):
        shutil.copy2(photo, root / "singles" / f"other_{photo.name}")
    torch.manual_seed(0)
    atomic.torch_save(base / "weights" / "edgeface_xxs_q.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    return root


def test_the_matrix_measures_each_factor_alone_and_resumes_without_measuring_again(faces, tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "matrix"
    argv = ["--faces", str(faces), "--preset", "cpu-demo", "--out", str(out), "--vlr", "16x16",
            "--unlabelled", "yes", "no", "--distractors", "3", "0", "--weights", "xxs", "--seeds", "0",
            "--split", "50/25/25", "--weights-dir", str(faces.parent / "weights"), "--bootstrap", "50",
            *[item for change in TINY for item in ("--set", change)]]
    assert bench.main(argv) == 0
    cells = json.loads((out / "cells.json").read_text())["cells"]
    reference, without, no_distractors = "16x16-seed0-xxs-unl-d3", "16x16-seed0-xxs-nounl-d3", "16x16-seed0-xxs-unl-d0"
    assert set(cells) == {reference, without, no_distractors}
    assert cells[reference]["pipeline"] and cells[without]["pipeline"]
    assert cells[no_distractors]["pipeline"] is None and cells[no_distractors]["models_of"] == "16x16-seed0-xxs-unl"
    from engine.sweep.objective import run_evaluation

    docs = {name: run_evaluation(Path(c["evaluation"]))[0] for name, c in cells.items()}   # a pipeline's links it
    assert docs[reference]["protocol"]["distractors"] == 3 and docs[no_distractors]["protocol"]["distractors"] == 0
    assert docs[no_distractors]["protocol"]["dsr"] == docs[reference]["protocol"]["dsr"]      # the same models
    assert docs[without]["protocol"]["dsr"] != docs[reference]["protocol"]["dsr"]
    assert len(list((out / "data").iterdir())) == 1                                          # one dataset

    def trained_on(name: str) -> int:
        dsr = Path(docs[name]["protocol"]["dsr"])
        return torch.load(dsr.parent / "last.pt", map_location="cpu", weights_only=True)["data"]["images"]
    assert trained_on(reference) == trained_on(without) + 12 - 3       # the singles not held out as distractors
    table = (out / "matrix.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 16x16-")]
    assert len(rows) == 3 and "(reference)" in rows[0] and "0 distractors" in rows[1] and "no unlabelled faces" in rows[2]
    assert all(line.count("|") == 9 and "not measured" not in line for line in rows)

    capsys.readouterr()
    assert bench.main(argv) == 0                                     # everything measured: nothing runs again
    said = capsys.readouterr().out
    assert said.count("measured before") == 3 and "$ vlr-workbench" not in said
    assert json.loads((out / "cells.json").read_text())["cells"] == cells
    with pytest.raises(SystemExit, match="other settings .*--bootstrap 50 -> 20"):   # cells that would not compare
        bench.main([*argv, "--bootstrap", "20"])
