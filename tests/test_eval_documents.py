"""eval.json and eval_folds.json as engine/runs/records.py reads them: a nested part of the wrong type
(``intervals``, ``comparisons``, ``protocol``, a row) is left out with a warning naming the file and its key,
like any damaged field of a run file, so `report`, `tips`, `runs` and `evaluate`'s table read the rest and
no reader needs fallbacks of its own."""

from __future__ import annotations

import json

from engine.events import Finished
from engine.presets import load
from engine.runs.records import read_evaluation, read_fold_evaluation
from run_factory import write_run
from workbench.cli.main import main

# the eval.json of an evaluate run, with every nested part of a wrong type somewhere
DAMAGED = {
    "dsr": {"rank1": 0.625, "rank5": 0.8, "cmc": [0.625, 0.8], "roc": {"far": [0.0, 1.0]}},
    "bicubic": {"rank1": 0.5, "rank5": "most"}, "hr": 5, "dsr_base": None,
    "intervals": 5,
    "comparisons": {"dsr_vs_bicubic": "big", "dsr_vs_bicubic_base": {"a": "dsr", "b": "bicubic_base",
                                                                     "difference": 0.1, "mcnemar": 3}},
    "protocol": {"probes": 12, "subjects": "three", "rows": {"dsr": 7, "bicubic": {"probes": "bicubic"}},
                 "camera": []},
}


def _evaluate_run(tmp_path, evaluation) -> str:
    path = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-evaluate", load("cpu-demo"), "evaluate",
                     status={"state": "finished"}, summary={"eval_json": "eval.json"}, evaluation=evaluation)
    return str(path)


def test_a_wrong_typed_nested_part_is_left_out_with_a_warning_naming_it(tmp_path, capsys):
    run = _evaluate_run(tmp_path, DAMAGED)
    doc = read_evaluation(tmp_path / "runs" / run / "eval.json")
    err = capsys.readouterr().err
    assert doc == {"dsr": {"rank1": 0.625, "rank5": 0.8, "cmc": [0.625, 0.8]}, "bicubic": {"rank1": 0.5},
                   "dsr_base": None, "comparisons": {"dsr_vs_bicubic_base": {"a": "dsr", "b": "bicubic_base",
                                                                              "difference": 0.1}},
                   "protocol": {"probes": 12, "rows": {"bicubic": {"probes": "bicubic"}}}}
    for key in ("intervals", "comparisons.dsr_vs_bicubic", "comparisons.dsr_vs_bicubic_base.mcnemar",
                "protocol.subjects", "protocol.rows.dsr", "protocol.camera", "hr", "bicubic.rank5", "dsr.roc"):
        assert f"eval.json: field '{key}' is" in err, key


def test_report_tips_and_runs_of_an_evaluation_with_intervals_5_end_without_a_traceback(tmp_path, capsys):
    """`"intervals": 5` ended `report RUN` in wording.row_interval's AttributeError."""
    run = _evaluate_run(tmp_path, {**DAMAGED, "intervals": 5})
    assert main(["report", run]) == 0
    out, err = capsys.readouterr()
    text = (tmp_path / "runs" / run / "report.md").read_text()
    assert "Traceback" not in out + err and f"{run}/eval.json: field 'intervals' is 5, expected object" in err
    assert "| probes | 12 |" in text and "62.5%" in text and "95% intervals" not in text
    assert main(["tips", run]) == 0 and main(["runs", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "62.5" in out


def test_evaluate_s_results_table_reads_a_damaged_eval_json(tmp_path, capsys):
    from workbench.cli.evaluate_cmd import _print_eval

    run = _evaluate_run(tmp_path, DAMAGED)
    _print_eval(Finished("evaluate", None, {"eval_json": f"{run}/eval.json"}))
    out = " ".join(capsys.readouterr().out.split())
    assert "62.5%" in out and "12 probes" in out and "bicubic: bicubic probes, ? recogniser" in out


def test_a_fold_aggregate_missing_a_comparison_s_difference_reports_the_rest(tmp_path, capsys):
    """eval_folds.json's comparison without its "difference" ended the report in a KeyError."""
    stat = {"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7, "n": 3, "values": [0.5, 0.7, 0.6]}
    folds = {"folds": 3, "seed": 1, "rows": {"dsr": {"rank1": stat, "rank5": {"mean": 0.8}}, "hr": "all"},
             "comparisons": {"dsr_vs_bicubic": {"a": "dsr", "b": "bicubic"}}}
    run = write_run(tmp_path / "runs", "20260101-100000-cpu-demo-pipeline", load("cpu-demo"), "pipeline",
                    status={"state": "finished"}, evaluation={"dsr": {"rank1": 0.6}},
                    summary={"eval_json": "eval.json", "eval_folds_json": "eval_folds.json"})
    (run / "eval_folds.json").write_text(json.dumps(folds))
    assert read_fold_evaluation(run / "eval_folds.json") == {"folds": 3, "seed": 1, "rows": {"dsr": {"rank1": stat}},
                                                             "comparisons": {}}
    assert main(["report", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "eval_folds.json: field 'comparisons.dsr_vs_bicubic' is" in err and "field 'rows.dsr.rank5'" in err
    assert "60.0% ± 10.0" in (run / "report.md").read_text()
