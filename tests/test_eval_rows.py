"""Fair evaluation rows (each probe kind with its own recogniser), intervals, and refusing broken models."""

from __future__ import annotations

import json

import pytest
import torch

from engine.io import atomic
from engine import presets as P
from engine.events import Failed, Finished
from engine.jobs.registry import JobRequest, run_job


def _edgeface(folder, name, seed, tweak=None):
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    torch.manual_seed(seed)
    model = build_edgeface("edgeface_xxs")
    if tweak is not None:
        with torch.no_grad():
            tweak(model)
    return atomic.torch_save(folder / name, edgeface_checkpoint(model))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from engine.models.dsr import DSRNet

    folder = tmp_path_factory.mktemp("rows-weights")
    paths = {"base": _edgeface(folder, "base.pt", 0), "ft_dsr": _edgeface(folder, "ft_dsr.pt", 1),
             "ft_bicubic": _edgeface(folder, "ft_bicubic.pt", 2)}
    torch.manual_seed(0)
    net = DSRNet((16, 16), 128, base_channels=8, residual_blocks=1)
    paths["dsr"] = atomic.torch_save(folder / "dsr.pt", {"kind": "dsr", "config": net.config,
                                                         "state_dict": net.state_dict(), "epoch": 1})
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["head.weight"].fill_(float("nan"))     # the first convolution
    paths["dsr_nan"] = atomic.torch_save(folder / "dsr_nan.pt", {"kind": "dsr", "config": net.config,
                                                                 "state_dict": state, "epoch": 1})
    paths["nan"] = _edgeface(folder, "nan.pt", 3, lambda m: m.model.head.fc.weight.fill_(float("nan")))

    def collapse(model):    # output = the fc bias whatever the image: every embedding equal
        model.model.head.fc.weight.zero_()
        model.model.head.fc.bias.uniform_(0.5, 1.0)
    paths["collapsed"] = _edgeface(folder, "collapsed.pt", 4, collapse)
    return paths


def _preset(tmp_path):
    return P.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu",
                                            "data.vlr_width": 16, "data.vlr_height": 16})


def _evaluate(tmp_path, demo_root, **options):
    return run_job(JobRequest("evaluate", _preset(tmp_path), data=str(demo_root), options=options), lambda e: None)


def test_five_rows_each_scored_by_its_own_recogniser_with_intervals(tmp_path, demo_root, weights):
    result = _evaluate(tmp_path, demo_root, dsr=str(weights["dsr"]), edgeface=str(weights["ft_dsr"]),
                       edgeface_bicubic=str(weights["ft_bicubic"]), edgeface_base=str(weights["base"]),
                       bootstrap=300)
    assert isinstance(result, Finished), getattr(result, "error", "")
    doc = json.loads((result.run_dir / "eval.json").read_text())
    rows = doc["protocol"]["rows"]
    assert {name: (r["probes"], r["recogniser_file"]) for name, r in rows.items()} == {
        "dsr": ("dsr", str(weights["ft_dsr"])), "dsr_base": ("dsr", str(weights["base"])),
        "bicubic": ("bicubic", str(weights["ft_bicubic"])), "bicubic_base": ("bicubic", str(weights["base"])),
        "hr": ("hr", str(weights["ft_dsr"]))}
    # different recognisers give different scores on the same probes; same probes -> same PSNR
    assert doc["dsr"]["psnr"] == doc["dsr_base"]["psnr"] and doc["bicubic"]["psnr"] == doc["bicubic_base"]["psnr"]
    assert doc["bicubic"]["auc"] != doc["bicubic_base"]["auc"] and doc["dsr"]["auc"] != doc["dsr_base"]["auc"]
    intervals = doc["intervals"]
    assert intervals["resamples"] == 300 and intervals["seed"] == _preset(tmp_path).runtime.seed
    for name in rows:
        for metric in ("rank1", "rank5", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3"):
            lo, hi = intervals["rows"][name][metric]
            assert 0.0 <= lo <= hi <= 1.0
        lo, hi = intervals["rows"][name]["rank1"]
        assert lo <= doc[name]["rank1"] <= hi
        roc = doc[name]["roc"]
        assert roc["far"][0] == 0.0 and roc["far"][-1] == 1.0 and roc["tar"][-1] == 1.0
    comparisons = doc["comparisons"]
    assert set(comparisons) == {"dsr_vs_bicubic", "dsr_vs_bicubic_base", "dsr_finetuned_vs_base",
                                "bicubic_finetuned_vs_base", "dsr_vs_bicubic_base_recogniser"}
    for body in comparisons.values():
        a, b = doc[body["a"]]["rank1"], doc[body["b"]]["rank1"]
        assert body["difference"] == pytest.approx(a - b)
        probes = doc["protocol"]["probes"]
        assert (body["mcnemar"]["a_only"] - body["mcnemar"]["b_only"]) / probes == pytest.approx(a - b)
        assert 0.0 < body["mcnemar"]["p"] <= 1.0


def test_cli_shows_intervals_and_says_when_a_difference_is_not_significant(tmp_path, demo_root, weights, capsys,
                                                                             monkeypatch):
    from rich.console import Console

    from workbench.cli import evaluate_cmd
    from workbench.cli.main import main

    monkeypatch.setattr(evaluate_cmd, "console", Console(width=200, highlight=False))
    preset_file = P.save(_preset(tmp_path), tmp_path / "tiny.toml")
    code = main(["evaluate", "--preset", str(preset_file), "--data", str(demo_root), "--dsr", str(weights["dsr"]),
                 "--edgeface", str(weights["ft_dsr"]), "--edgeface-base", str(weights["base"]),
                 "--bootstrap", "200"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(next((tmp_path / "runs").glob("*-tiny-evaluate/eval.json")).read_text())
    assert set(doc["protocol"]["rows"]) == {"dsr", "dsr_base", "bicubic", "bicubic_base", "hr"}
    lo, hi = doc["intervals"]["rows"]["dsr"]["rank1"]
    rows = {row[0]: row[1:] for row in evaluate_cmd.table_rows(doc)}
    assert rows["rank-1"][0] == f"{100 * doc['dsr']['rank1']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in out and f"{100 * doc['dsr']['rank1']:.1f}%" in out
    assert "DSR + base" in out and "paired rank-1 differences" in out
    # 15 probes of 3 random recognisers: no difference reaches significance
    assert "not significant (McNemar p=" in out


@pytest.mark.parametrize("key, option, what", [("nan", "edgeface", "recogniser"),
                                               ("dsr_nan", "dsr", "DSR checkpoint")])
def test_non_finite_weights_are_an_error_naming_the_file(tmp_path, demo_root, weights, key, option, what):
    options = {"edgeface": str(weights["ft_dsr"]), option: str(weights[key])}
    result = _evaluate(tmp_path, demo_root, **options)
    assert isinstance(result, Failed) and result.traceback is None
    assert str(weights[key]) in result.error and "non-finite" in result.error and what in result.error
    assert not list((tmp_path / "runs").glob("*/eval.json"))


def test_a_collapsed_recogniser_is_reported_not_scored(tmp_path, demo_root, weights):
    result = _evaluate(tmp_path, demo_root, edgeface=str(weights["collapsed"]))
    assert isinstance(result, Failed) and result.traceback is None
    assert str(weights["collapsed"]) in result.error and "same embedding" in result.error
    assert not list((tmp_path / "runs").glob("*/eval.json"))


def test_rows_can_be_chosen_per_row(tmp_path, demo_root, weights):
    result = _evaluate(tmp_path, demo_root, edgeface=str(weights["ft_dsr"]), edgeface_base=str(weights["base"]),
                       bootstrap=0, rows=[{"name": "bicubic", "probes": "bicubic", "recogniser": "base"},
                                          {"name": "hr", "probes": "hr", "recogniser": "base"}])
    assert isinstance(result, Finished), getattr(result, "error", "")
    doc = json.loads((result.run_dir / "eval.json").read_text())
    assert doc["dsr"] is None and "intervals" not in doc and "comparisons" not in doc
    assert {r["recogniser"] for r in doc["protocol"]["rows"].values()} == {"base"}
    bad = _evaluate(tmp_path, demo_root, edgeface=str(weights["ft_dsr"]),
                    rows=[{"name": "x", "probes": "bicubic", "recogniser": "bicubic_finetuned"}])
    assert isinstance(bad, Failed) and "bicubic_finetuned" in bad.error and "--edgeface-bicubic" in bad.error
