"""Sweep objectives over evaluations: the difference of two metrics, the best bicubic row, fold means, and
pipeline trials with --baselines and --folds (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import presets
from engine.errors import WorkbenchError
from engine.sweep.objective import check_objective, objective_value
from workbench.cli.main import main

MARGIN = "eval.dsr.rank1 - eval.bicubic_best.rank1"


def _run_with_eval(tmp_path: Path, rows: dict) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(rows))
    (run / "summary.json").write_text(json.dumps({"status": "finished"}))
    return run


def test_a_margin_objective_subtracts_the_better_bicubic_row(tmp_path):
    run = _run_with_eval(tmp_path, {"dsr": {"rank1": 0.70}, "bicubic": {"rank1": 0.55},
                                    "bicubic_base": {"rank1": 0.60}, "hr": {"rank1": 0.9}})
    assert objective_value(run, MARGIN, True) == pytest.approx(0.70 - 0.60)
    assert objective_value(run, "eval.bicubic_best.rank1", True) == pytest.approx(0.60)
    assert objective_value(run, "eval.dsr.rank1 - eval.hr.rank1", True) == pytest.approx(-0.2)


def test_with_folds_an_eval_objective_is_the_mean_over_the_folds(tmp_path):
    run = _run_with_eval(tmp_path, {"dsr": {"rank1": 0.99}, "bicubic": {"rank1": 0.0}})   # one fold's: not used
    def stat(low, high):   # what folds.aggregate writes of two folds
        return {"mean": (low + high) / 2, "std": abs(high - low) / 2 ** 0.5, "min": low, "max": high, "n": 2,
                "values": [low, high]}

    folds = {"folds": 2, "rows": {"dsr": {"rank1": stat(0.4, 0.6)}, "bicubic": {"rank1": stat(0.2, 0.4)},
                                  "bicubic_base": {"rank1": stat(0.3, 0.4)}}}
    (run / "eval_folds.json").write_text(json.dumps(folds))
    (run / "summary.json").write_text(json.dumps({"status": "finished", "eval_folds_json": "eval_folds.json"}))
    assert objective_value(run, MARGIN, True) == pytest.approx(0.5 - 0.35)


def test_a_missing_row_or_a_malformed_objective_names_what_to_give(tmp_path):
    run = _run_with_eval(tmp_path, {"dsr": {"rank1": 0.7}})
    with pytest.raises(WorkbenchError, match="no finite eval.bicubic_best.rank1"):
        objective_value(run, MARGIN, True)
    for bad in ("eval.dsr.rank1 - ", "eval.dsr - eval.bicubic.rank1", "a - b - c", "val.psnr-val.ssim"):
        with pytest.raises(WorkbenchError, match="difference of two"):
            check_objective(bad)


def test_baselines_or_folds_on_a_train_dsr_sweep_is_exit_2_before_anything_runs(tmp_path, capsys):
    (tmp_path / "space.toml").write_text('[params]\n"dsr.learning_rate" = { low = 1e-4, high = 1e-3 }\n')
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs")})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    code = main(["sweep", "--preset", str(tiny), "--space", str(tmp_path / "space.toml"), "--folds", "3"])
    assert code == 2
    assert "--job pipeline" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_pipeline_sweep_with_baselines_and_folds_scores_each_trial_by_its_mean_margin(
        tmp_path, demo_root, fast_pipeline_preset, capsys):
    tiny = presets.save(presets.derive(fast_pipeline_preset, "tiny"), tmp_path / "tiny.toml")
    (tmp_path / "space.toml").write_text('[params]\n"dsr.lambda_tv" = { low = 0.0, high = 1e-4 }\n')
    argv = ["sweep", "--preset", str(tiny), "--data", str(demo_root), "--space", str(tmp_path / "space.toml"),
            "--job", "pipeline", "--baselines", "--folds", "2", "--objective", MARGIN, "--trials", "1",
            "--sampler", "random", "--no-prune"]
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "show", "tiny-sweep", "--json"]) == 0
    trial = json.loads(capsys.readouterr().out)["trials"][0]
    run = Path(trial["run_dir"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["options"]["baselines"] is True and summary["options"]["folds"] == 2
    rows = json.loads((run / "eval_folds.json").read_text())["rows"]
    assert rows["dsr"]["rank1"]["n"] == 2 and "bicubic_base" in rows and "bicubic" in rows
    best_bicubic = max(rows["bicubic"]["rank1"]["mean"], rows["bicubic_base"]["rank1"]["mean"])
    assert trial["value"] == pytest.approx(rows["dsr"]["rank1"]["mean"] - best_bicubic)
    # the report's table of each trial against bicubic gives the fold means and the significant folds
    from engine.sweep.margins import margin_rows

    (table_row,) = margin_rows([{**trial, "state": "complete"}])
    assert table_row[:2] == [str(trial["number"]), "sampler"]
    assert table_row[4].startswith(f"{trial['value'] * 100:+.1f} ± ") and table_row[4].endswith("(mean ± sd)")
    assert table_row[5].endswith("of 2 folds") and table_row[7].endswith(" min")


@pytest.mark.parametrize("argv, message", [
    (["--objective", "val.psnrr"], "Did you mean val.psnr?"),
    (["--objective", "eval.dsr.rank1"], "need pipeline trials"),
    (["--job", "pipeline", "--objective", "eval.dsr.rank_1"], "Did you mean eval.dsr.rank1?"),
    (["--job", "pipeline", "--objective", "val.psnr"], "scored by its evaluation"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the study's storage"),
    (["--storage", "sqlite:////nonexistent-dir/x.db"], "cannot open the study's storage"),
    (["--storage", "sqlite:///"], "in-memory SQLite database"),
    (["--storage", "sqlite://"], "in-memory SQLite database"),
    (["--storage", "sqlite:///:memory:"], "in-memory SQLite database"),
    (["--storage", "localhost/sweeps"], "is not a database URL"),
])
def test_an_unknown_metric_or_an_unreachable_storage_is_exit_2_before_anything_runs(tmp_path, capsys, argv,
                                                                                      message):
    (tmp_path / "space.toml").write_text('[params]\n"dsr.learning_rate" = { low = 1e-4, high = 1e-3 }\n')
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs")})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    assert main(["sweep", "--preset", str(tiny), "--space", str(tmp_path / "space.toml"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any((tmp_path / "runs").glob("*-tiny-*"))               # no trial run started


def test_a_val_objective_for_pipeline_trials_names_the_objectives_a_pipeline_trial_records(tmp_path, capsys):
    """`sweep --job pipeline --objective val.psnr` ended with "(known: )", an empty list."""
    (tmp_path / "space.toml").write_text('[params]\n"dsr.learning_rate" = { low = 1e-4, high = 1e-3 }\n')
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "runs")})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    assert main(["sweep", "--preset", str(tiny), "--space", str(tmp_path / "space.toml"), "--job", "pipeline",
                 "--objective", "val.psnr"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "(known: )" not in err and "Traceback" not in err
    assert "objective val.psnr: a pipeline trial is scored by its evaluation" in err
    assert "ROW one of dsr, dsr_base, bicubic, bicubic_base, hr, bicubic_best" in err
    assert "METRIC one of rank1, rank5, auc, eer" in err and "summary.dsr_rank1" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*-tiny-*"))
