"""`report STUDY`: a sweep's page (trials, tips, history, parallel coordinates, importances, the best
trial's evaluation with intervals), self-contained in HTML (issue 22)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine import presets
from engine.sweep.report import _tip_blocks
from workbench.cli.main import main


@pytest.fixture
def pipeline_study(tmp_path, demo_root, fast_pipeline_preset, capsys):
    """A finished 3-trial pipeline sweep with baselines (study `tiny-sweep`); the base preset's file."""
    tiny = presets.save(presets.derive(fast_pipeline_preset, "tiny"), tmp_path / "tiny.toml")
    (tmp_path / "space.toml").write_text('[params]\n"dsr.lambda_tv" = { low = 0.0, high = 1e-3 }\n'
                                         '"dsr.learning_rate" = { low = 1e-4, high = 1e-3, log = true }\n')
    argv = ["sweep", "--preset", str(tiny), "--data", str(demo_root), "--space", str(tmp_path / "space.toml"),
            "--job", "pipeline", "--baselines", "--objective", "eval.dsr.rank1 - eval.bicubic_best.rank1",
            "--trials", "3", "--sampler", "random", "--seed", "1", "--no-prune"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    return tiny


def test_the_html_report_of_a_study_is_one_file_with_its_trials_plots_and_the_winners_intervals(
        pipeline_study, tmp_path, capsys):
    out = tmp_path / "out" / "sweep.html"
    assert main(["report", "tiny-sweep", "--preset", str(pipeline_study), "--html", "--out", str(out)]) == 0
    page = out.read_text()
    assert list(out.parent.iterdir()) == [out]                         # self-contained: nothing else written
    assert page.count("data:image/png;base64,") == 3                   # history, parallel coordinates, importances
    assert "eval.dsr.rank1 - eval.bicubic_best.rank1" in page and "baselines on" in page
    assert len(re.findall(r"<tr><td>\d+</td><td>complete</td>", page)) == 3
    assert "Paired comparisons" in page and "McNemar" in page         # the best trial's margin, beyond noise?
    capsys.readouterr()
    assert main(["sweep", "--preset", str(pipeline_study), "show", "tiny-sweep", "--json"]) == 0
    best = max(json.loads(capsys.readouterr().out)["trials"], key=lambda t: t["value"])
    assert f"Best trial: {best['number']} ({best['value']:.4g})" in page
    assert Path(best["run_dir"]).name in page


def test_the_markdown_report_links_its_figures_beside_it(pipeline_study, tmp_path, capsys):
    assert main(["report", "tiny-sweep", "--preset", str(pipeline_study)]) == 0
    out = tmp_path / "runs" / "sweeps" / "tiny-sweep-report.md"
    text = out.read_text()
    for name in ("history", "parallel", "importances"):
        assert f"(tiny-sweep-report_files/{name}.png)" in text
        assert (out.parent / "tiny-sweep-report_files" / f"{name}.png").stat().st_size > 1000
    # each trial against the best bicubic row: its margin (the objective, in points) with the paired interval
    capsys.readouterr()
    assert main(["sweep", "--preset", str(pipeline_study), "show", "tiny-sweep", "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)["trials"]
    section = text.split("## Each trial against bicubic", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(lines) == len(trials) == 3
    for line, trial in zip(lines, trials):
        cells = [c.strip() for c in line.strip("|").split("|")]
        margin = re.fullmatch(r"([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\]", cells[4])
        assert cells[0] == str(trial["number"]) and margin, cells
        assert float(margin.group(1)) == pytest.approx(trial["value"] * 100, abs=0.051)
        assert float(margin.group(2)) <= float(margin.group(1)) <= float(margin.group(3))
        assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", cells[2])          # DSR rank-1 [interval]
        assert cells[5].startswith(("yes", "no")) and "McNemar p = " in cells[5]


def test_an_unknown_study_or_run_is_one_message_and_exit_2(tmp_path, capsys):
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs")})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    assert main(["report", "no-such-study", "--preset", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert "neither a run directory nor a study" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "sweeps" / "no-such-study.journal").exists()


def test_which_tip_won_what_ranks_each_labelled_trial_against_the_base():
    rows = [{"number": 0, "state": "complete", "value": 20.0, "label": "base: r1"},
            {"number": 1, "state": "complete", "value": 22.5, "label": "tip: lower lr (r1)"},
            {"number": 2, "state": "fail", "value": None, "label": "tip: clip (r1)"},
            {"number": 3, "state": "complete", "value": 21.0, "label": None}]
    table = _tip_blocks(rows, pareto=False, maximize=True)[1][2]
    assert table[0] == ["base: r1", "0", "complete", "20", "3 of 3", "-"]
    assert table[1] == ["tip: lower lr (r1)", "1", "complete", "22.5", "1 of 3", "+2.5"]
    assert table[2][3:] == ["-", "-", "-"]


GOOD_EVAL = {"dsr": {"rank1": 0.7, "psnr": 25.0}, "bicubic": {"rank1": 0.6, "psnr": 24.0},
             "bicubic_base": {"rank1": 0.5, "psnr": 24.0},
             "intervals": {"rows": {"dsr": {"rank1": [0.65, 0.75]}, "bicubic": {"rank1": [0.55, 0.65]}}},
             "comparisons": {"dsr_vs_bicubic": {"difference": 0.1, "interval": [0.04, 0.16], "significant": True,
                                                "mcnemar": {"p": 0.01}}}}


@pytest.mark.parametrize("damage", [
    {"dsr": {"rank1": "0.7"}},                     # a wrongly typed metric (dropped by the reader)
    {"dsr": {"rank1": None}},
    {"bicubic": 0.5, "bicubic_base": 0.4},         # rows that are not objects
    {"intervals": ["not", "an", "object"]},
    {"comparisons": {"dsr_vs_bicubic": "text"}},
    {"comparisons": {"dsr_vs_bicubic": {"difference": 0.1, "mcnemar": {"p": "small"}}}},
    {"dsr": {"rank1": True}},
])
def test_the_margin_table_skips_a_trial_whose_evaluation_is_damaged(tmp_path, damage):
    """One damaged eval.json leaves its trial out of "Each trial against bicubic" (or shows "-" for what it
    lacks) instead of stopping `report STUDY`; an intact one gives its figures."""
    from engine.sweep.margins import margin_rows

    rows = []
    for number, doc in enumerate((GOOD_EVAL, {**GOOD_EVAL, **damage})):
        run = tmp_path / f"run{number}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"total_seconds": 120.0}))
        (run / "eval.json").write_text(json.dumps(doc))
        rows.append({"number": number, "label": f"trial {number}", "state": "complete", "run_dir": str(run)})
    table = margin_rows(rows)
    assert table[0] == ["0", "trial 0", "70.0 [65.0, 75.0]", "60.0 [55.0, 65.0] (bicubic)", "+10.0 [+4.0, +16.0]",
                        "yes, McNemar p = 0.01", "25.00 / 24.00 dB", "2.0 min"]
    assert len(table) in (1, 2)
    if len(table) == 2:                                     # kept: every damaged cell reads "-" or leaves p out
        assert table[1][0] == "1" and "small" not in " ".join(table[1]) and "nan" not in " ".join(table[1])


def test_the_margin_table_names_the_camera_protocol_a_trial_was_measured_on(tmp_path):
    from engine.sweep.margins import margin_rows

    camera = {"protocol": "unseen camera", "probes": "motion=1:3,jpeg=25:50", "dataset": None, "training": None}
    rows = []
    for number, protocol in enumerate(({"camera": camera}, {"camera": {"protocol": "clean"}}, ["damaged"])):
        run = tmp_path / f"run{number}"
        run.mkdir()
        (run / "eval.json").write_text(json.dumps({**GOOD_EVAL, "protocol": protocol}))
        rows.append({"number": number, "label": f"trial {number}", "state": "complete", "run_dir": str(run)})
    table = margin_rows(rows)
    assert [r[1] for r in table] == ["trial 0 [unseen camera (motion=1:3,jpeg=25:50)]", "trial 1", "trial 2"]
