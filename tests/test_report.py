"""`vlr-workbench report`: a Markdown/HTML page with plots, rows and intervals that match eval.json."""

from __future__ import annotations

import base64
import json
import re

import pytest
import torch
from PIL import Image

from engine.io import atomic
from engine import presets as P
from engine.evaluation import wording
from engine.events import Finished
from engine.jobs.registry import JobRequest, run_job
from engine.runs.run_dir import RunDir


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, demo_root):
    """A real evaluate run (random recognisers, tiny DSR) with five rows, intervals and comparisons."""
    from engine.models.dsr import DSRNet
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    folder = tmp_path_factory.mktemp("report")
    paths = {}
    for seed, name in enumerate(("base", "ft_dsr", "ft_bicubic")):
        torch.manual_seed(seed)
        paths[name] = atomic.torch_save(folder / f"{name}.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    net = DSRNet((16, 16), 128, base_channels=8, residual_blocks=1)
    paths["dsr"] = atomic.torch_save(folder / "dsr.pt", {"kind": "dsr", "config": net.config,
                                                         "state_dict": net.state_dict(), "epoch": 1})
    preset = P.load("cpu-demo").with_changes({"runtime.runs_dir": str(folder / "runs"), "runtime.device": "cpu",
                                              "eval.threshold": 0.3})
    result = run_job(JobRequest("evaluate", preset, data=str(demo_root), options={
        "dsr": str(paths["dsr"]), "edgeface": str(paths["ft_dsr"]), "edgeface_bicubic": str(paths["ft_bicubic"]),
        "edgeface_base": str(paths["base"]), "bootstrap": 200}), lambda e: None)
    assert isinstance(result, Finished), getattr(result, "error", "")
    return folder, preset, result.run_dir


def _check_figures_match(text: str, doc: dict) -> None:
    for row in ("dsr", "dsr_base", "bicubic", "bicubic_base", "hr"):
        for metric in ("rank1", "rank5", "eer", "tar_at_far_1e-2"):
            expected = wording.rate_with_interval(doc[row][metric], wording.row_interval(doc, row, metric))
            assert "[" in expected and expected in text, (row, metric, expected)
    for label, comparison in wording.comparison_lines(doc):
        assert comparison in text and label in text
    assert f"| probes | {doc['protocol']['probes']} |" in text or f"<td>{doc['protocol']['probes']}</td>" in text


def test_markdown_report_of_an_evaluate_run(evaluated):
    _folder, _preset, run_dir = evaluated
    from workbench.cli.main import main

    assert main(["report", str(run_dir)]) == 0
    report = run_dir / "report.md"
    text = report.read_text()
    doc = json.loads((run_dir / "eval.json").read_text())
    _check_figures_match(text, doc)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"report_files/cmc.png", "report_files/roc.png"} <= set(images)
    for rel in images:
        with Image.open(run_dir / rel) as png:
            assert png.format == "PNG" and png.size[0] >= 300
    # the run's preset differs from cpu-demo (its built-in) in the keys the fixture changed
    assert "`cpu-demo`" in text and "| eval.threshold | 0.35 | 0.3 |" in text


def test_html_report_of_a_pipeline_run_embeds_everything(evaluated, tmp_path):
    folder, preset, eval_run = evaluated
    dsr_run = RunDir.create(folder / "runs", preset, "train-dsr")
    (dsr_run.path / "samples").mkdir()
    for epoch in (1, 2, 3):
        Image.new("RGB", (64, 16), (epoch * 60, 0, 0)).save(dsr_run.path / "samples" / f"epoch_{epoch:03d}.png")
    pipeline = RunDir.create(folder / "runs", preset, "pipeline")
    pipeline.write_summary({"status": "done", "stages": {"recogniser": None, "train-dsr": str(dsr_run.path),
                                                          "evaluate": str(eval_run)}})
    out = tmp_path / "out" / "page.html"
    from workbench.cli.main import main

    assert main(["report", str(pipeline.path), "--html", "--out", str(out)]) == 0
    text = out.read_text()
    _check_figures_match(text, json.loads((eval_run / "eval.json").read_text()))
    sources = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)  # cmc, roc, 2 strips
    for src in sources:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{dsr_run.path.name}/samples/epoch_001.png" in text and "epoch_003.png" in text
    assert "epoch_002.png" not in text                     # first and last strip of a stage
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["page.html"]   # self-contained: no side files
    assert "`" not in text and "preset <code>cpu-demo</code> against the built-in <code>" in text


def test_a_run_without_evaluation_is_a_user_error(tmp_path, capsys):
    from workbench.cli.main import main

    run = RunDir.create(tmp_path / "runs", P.load("cpu-demo"), "train-dsr")
    assert main(["report", str(run.path)]) == 2
    assert str(run.path) in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_report_of_a_copied_run_reads_the_copy(evaluated, tmp_path):
    """A run's files refer to each other relative to the run: a copy never reads the original's eval.json."""
    import shutil

    from engine.runs.run_dir import linked_file
    from workbench.cli.main import main

    _folder, _preset, run_dir = evaluated
    assert json.loads((run_dir / "summary.json").read_text())["eval_json"] == "eval.json"   # written relative
    copy = tmp_path / "copied" / run_dir.name
    shutil.copytree(run_dir, copy)
    old = json.loads((copy / "summary.json").read_text())
    old["eval_json"] = str(run_dir / "eval.json")          # a run written before: an absolute path to the original
    (copy / "summary.json").write_text(json.dumps(old))
    assert linked_file(copy, old["eval_json"]) == copy / "eval.json"
    assert main(["report", str(copy), "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert f"Results: {copy / 'eval.json'}" in text and str(run_dir) not in text


def test_the_preset_diff_follows_derived_from_through_user_presets_to_the_built_in(evaluated, tmp_path):
    """A preset derived through another user preset was reported as "derived from no built-in"."""
    import shutil

    from workbench.cli.main import main

    _folder, preset, run_dir = evaluated
    child = P.derive(preset.with_changes({"eval.threshold": 0.25}), "child")       # cpu-demo -> child
    P.save(child, "child")
    grandchild = P.derive(child.with_changes({"eval.gallery_per_subject": 2}), "grandchild")
    copy = tmp_path / "copied" / run_dir.name
    shutil.copytree(run_dir, copy)
    P.save(grandchild, copy / "preset.toml", overwrite=True)
    assert main(["report", str(copy)]) == 0
    text = (copy / "report.md").read_text()
    assert "derived from no built-in" not in text
    assert "against the built-in `cpu-demo` it came from (through the user preset `child`)" in text
    assert "| eval.threshold | 0.35 | 0.25 |" in text and "| eval.gallery_per_subject | 1 | 2 |" in text
    # the chain broken (child deleted): the preset it derives from is named
    (P.user_dir() / "child.toml").unlink()
    assert main(["report", str(copy)]) == 0
    assert "(derived from `child`, which leads back to no built-in) against `vlr-32x32`" in \
        (copy / "report.md").read_text()
