"""``pipeline --baselines`` (five rows, each with its own recogniser) and ``pipeline --folds K`` (K subject
splits, aggregation, stop and resume reusing finished folds) on the tiny demo data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import presets as P
from engine.events import Finished, Log
from engine.jobs.registry import JobRequest, StopFlag, run_job
from engine.runs.records import read_metrics, stage_dirs

FIVE_ROWS = {"dsr", "dsr_base", "bicubic", "bicubic_base", "hr"}
def test_baselines_give_five_rows_each_scored_by_its_own_recogniser(tmp_path, demo_root, fast_pipeline_preset):
    events = []
    preset = fast_pipeline_preset
    result = run_job(JobRequest("pipeline", preset, data=str(demo_root),
                                options={"baselines": True, "bootstrap": 50}), events.append)
    assert isinstance(result, Finished) and not result.stopped, getattr(result, "error", "")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert set(summary["stages"]) == {"recogniser", "train-dsr", "finetune-bicubic", "finetune", "evaluate"}
    assert summary["stage_runs"]["finetune-bicubic"] == summary["stages"]["finetune-bicubic"]
    bicubic_run, dsr_run = Path(summary["stages"]["finetune-bicubic"]), Path(summary["stages"]["finetune"])
    assert bicubic_run != dsr_run and (bicubic_run / "best.pt").is_file()
    import torch
    assert not torch.load(bicubic_run / "best.pt", weights_only=True).get("dsr")     # trained on bicubic
    assert torch.load(dsr_run / "best.pt", weights_only=True).get("dsr") == \
        str(Path(summary["stages"]["train-dsr"]) / "best.pt")

    doc = json.loads(Path(summary["eval_json"]).read_text())
    assert FIVE_ROWS <= {k for k, v in doc.items() if isinstance(v, dict) and "rank1" in v}
    files = {row: spec["recogniser_file"] for row, spec in doc["protocol"]["rows"].items()}
    base = preset.runtime.edgeface_weights
    assert files == {"dsr": str(dsr_run / "best.pt"), "hr": str(dsr_run / "best.pt"),
                     "bicubic": str(bicubic_run / "best.pt"), "dsr_base": base, "bicubic_base": base}
    assert doc["intervals"]["resamples"] == 50 and set(doc["intervals"]["rows"]) == FIVE_ROWS
    for row in FIVE_ROWS:
        lo, hi = doc["intervals"]["rows"][row]["rank1"]
        assert lo <= doc[row]["rank1"] <= hi
    assert {"dsr_vs_bicubic", "bicubic_finetuned_vs_base", "dsr_finetuned_vs_base"} <= set(doc["comparisons"])
    announced = [e.message.split(": ")[1] for e in events
                 if isinstance(e, Log) and e.job == "pipeline" and e.message.startswith("stage ")]
    assert announced == ["recogniser", "train-dsr", "finetune-bicubic", "finetune", "evaluate"]


def _stage_files(record: dict) -> dict[str, tuple[str, int]]:
    """{stage: (run dir, mtime of its best.pt)} of a fold's training stages."""
    return {name: (path, (Path(path) / "best.pt").stat().st_mtime_ns)
            for name, path in record["stages"].items() if path and (Path(path) / "best.pt").is_file()}


def test_folds_stop_then_resume_reuses_the_finished_fold_and_aggregates(tmp_path, demo_root, capsys,
                                                                         fast_pipeline_preset):
    from engine.data.layout import subject_of
    from engine.evaluation.report import write_report
    from workbench.cli.main import main

    preset = fast_pipeline_preset
    stop = StopFlag()

    def emit(event):   # stop in the second fold, once its DSR is trained
        if isinstance(event, Log) and event.job == "pipeline" and event.message.startswith("fold 2/2, stage 3/4"):
            stop.set()

    result = run_job(JobRequest("pipeline", preset, data=str(demo_root), options={"folds": 2, "bootstrap": 20}),
                     emit, stop)
    assert isinstance(result, Finished) and result.stopped
    run_dir = result.run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and "eval_folds_json" not in summary
    first, second = summary["folds"]
    assert "evaluate" in first["stages"] and "evaluate" not in second["stages"]
    assert "train-dsr" in second["stages"]
    before = {1: _stage_files(first), 2: _stage_files(second)}
    assert set(before[1]) == {"train-dsr", "finetune"} and set(before[2]) == {"train-dsr"}

    # two folds, disjoint held-out identities, each the test split of its own dataset under the pipeline
    tests = [set(f["test_subjects"]) for f in summary["folds"]]
    assert tests[0] and tests[1] and not tests[0] & tests[1]
    for record, held_out in zip(summary["folds"], tests):
        data = Path(record["data_root"])
        assert data.parent.parent == run_dir
        manifest = json.loads((data / "manifest.json").read_text())
        assert set(manifest["fold"]["test_subjects"]) == held_out
        train_ids = {subject_of(p.name) for split in ("train", "val")
                     for p in (data / f"{split}_processed" / "hr_images").glob("*.png")}
        assert train_ids and not train_ids & held_out

    assert main(["pipeline", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["folds_done"] == 2
    assert _stage_files(summary["folds"][0]) == before[1]                 # fold 1 not retrained
    assert _stage_files(summary["folds"][1])["train-dsr"] == before[2]["train-dsr"]

    docs = [json.loads((run_dir / f["eval_json"]).read_text()) for f in summary["folds"]]   # relative to the run
    for doc, held_out in zip(docs, tests):
        assert doc["protocol"]["subjects"] == len(held_out)
        assert Path(doc["protocol"]["data_root"]).parent.parent == run_dir
    aggregated = json.loads((run_dir / summary["eval_folds_json"]).read_text())
    assert aggregated["folds"] == 2 and summary["eval_folds_json"] == "eval_folds.json"   # relative to the run
    for row in ("dsr", "dsr_base", "bicubic", "hr"):
        values = [d[row]["rank1"] for d in docs]
        stat = aggregated["rows"][row]["rank1"]
        assert stat["values"] == values and stat["mean"] == pytest.approx(sum(values) / 2)
        assert stat["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
        assert summary[f"{row}_rank1"] == pytest.approx(stat["mean"])
    assert "2 folds" in out and "±" in out and "eval_folds.json" in out

    report = write_report(run_dir)
    text = report.read_text()
    assert "Repeated splits: 2 folds" in text and "rank-1 per fold" in text
    assert (run_dir / "report_files" / "cmc.png").is_file()


def test_folds_bad_input_exits_2_with_a_message(tmp_path, demo_root, capsys, fast_pipeline_preset):
    from workbench.cli.main import main

    preset_file = P.save(fast_pipeline_preset, tmp_path / "tiny.toml")
    assert main(["pipeline", "--preset", str(preset_file), "--data", str(demo_root), "--folds", "1"]) == 2
    assert "--folds 1" in capsys.readouterr().err
    assert main(["pipeline", "--preset", str(preset_file), "--data", str(demo_root), "--folds", "12"]) == 2
    err = capsys.readouterr().err
    assert "--folds 12" in err and "12 subject(s)" in err
    run_dir = next((tmp_path / "runs").glob("*-tiny-pipeline"))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert main(["pipeline", "--resume", str(run_dir), "--folds", "3"]) == 2
    assert "--resume continues it as it was" in capsys.readouterr().err


def test_folds_aggregate_with_a_relative_runs_dir(tmp_path, demo_root, fast_pipeline_preset, monkeypatch):
    """runtime.runs_dir = "runs" (the built-ins' value): the folds' eval.json files are found for the aggregate
    (a fold's path relative to the working directory was once joined to the pipeline's directory)."""
    monkeypatch.chdir(tmp_path)
    preset = fast_pipeline_preset.with_changes({"runtime.runs_dir": "runs"})
    result = run_job(JobRequest("pipeline", preset, data=str(demo_root), options={"folds": 2}),
                     lambda event: None, StopFlag())
    assert isinstance(result, Finished), result
    summary = json.loads((result.run_dir / "summary.json").read_text())
    folds = json.loads((result.run_dir / summary["eval_folds_json"]).read_text())
    assert folds["folds"] == 2 and folds["rows"]["dsr"]["rank1"]["n"] == 2
    assert not Path(summary["folds"][0]["eval_json"]).is_absolute()         # written relative to the run
    # tips, the runs table and the app read a folds pipeline through its last fold's stage runs, from anywhere
    monkeypatch.chdir(tmp_path.parent)
    found = stage_dirs(tmp_path / result.run_dir)
    assert {p.resolve().parent.name for p in found} == {"fold_2"}
    assert sorted(p.name.rsplit("-", 1)[-1] for p in found) == ["dsr", "evaluate", "finetune"]
    dsr = next(p for p in found if p.name.endswith("train-dsr"))
    assert [r["epoch"] for r in read_metrics(dsr) if r.get("split") == "val"] == [1]
