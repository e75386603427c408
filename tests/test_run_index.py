"""The runs table's data (engine.runs.index) and `vlr-workbench runs` / `export-csv` on generated runs."""

from __future__ import annotations

import csv
import io
import json

import pytest

from engine.errors import WorkbenchError
from engine.presets import load
from engine.runs.index import (display_cells, filter_rows, index_runs, metric_deltas, metrics_csv, preset_diff,
                              read_row, sort_rows, split_name)
from workbench.cli.main import main

from run_factory import make_runs


@pytest.fixture()
def runs(tmp_path):
    return make_runs(tmp_path / "runs")


def test_rows_hold_state_metrics_and_rank1(runs):
    rows = {row.path: row for row in index_runs(runs["finished"].parent, load("cpu-demo"))}
    assert len(rows) == 6
    finished = rows[runs["finished"]]
    assert (finished.preset, finished.job, finished.state, finished.epochs) == ("cpu-demo", "train-dsr", "finished", 3)
    assert finished.best_psnr == 24.5 and finished.gain == pytest.approx(2.5)
    fast = rows[runs["fast"]]
    assert fast.preset == "fast-demo" and fast.best_psnr == 26.0 and fast.epochs == 4
    assert fast.differs == ["dsr.learning_rate", "dsr.epochs"]
    assert rows[runs["stopped"]].state == "stopped"
    assert rows[runs["failed"]].state == "failed"
    assert rows[runs["dead"]].state == "dead"        # status running, stale heartbeat, pid gone
    assert rows[runs["evaluate"]].rank1 == {"dsr": 0.625, "bicubic": 0.5, "hr": 0.95}
    assert rows[runs["evaluate"]].state == "finished"  # no status.json: summary.json without "stopped"


def test_sort_and_filter(runs):
    rows = index_runs(runs["finished"].parent)
    by_psnr = sort_rows(rows, "psnr")
    assert [r.best_psnr for r in by_psnr[:3]] == [26.0, 24.5, 21.0]      # best first, empty cells last
    assert by_psnr[-1].best_psnr is None
    assert [r.best_psnr for r in sort_rows(rows, "psnr", descending=False)[:2]] == [21.0, 24.5]
    assert {r.preset for r in filter_rows(rows, preset="cpu-demo")} == {"cpu-demo"}
    assert len(filter_rows(rows, preset="cpu-demo", job="train-dsr")) == 2
    with pytest.raises(WorkbenchError, match="Sort keys"):
        sort_rows(rows, "colour")


def test_two_runs_diff_and_deltas(runs):
    a, b = read_row(runs["finished"]), read_row(runs["fast"])
    demo = load("cpu-demo")
    assert preset_diff(a, b) == [("dsr.learning_rate", demo.dsr.learning_rate, 5e-3), ("dsr.epochs", demo.dsr.epochs, 4)]
    deltas = {d.metric: d for d in metric_deltas(a, b)}
    assert deltas["best val PSNR dB"].change == pytest.approx(1.5)
    assert deltas["rank-1 dsr"].change is None


def test_split_name_and_display(runs):
    assert split_name("20260101-100000-my-preset-v2-finetune-3")[:2] == ("my-preset-v2", "finetune")
    assert split_name("custom")[:2] == ("custom", "")
    row = read_row(runs["fast"])
    assert display_cells(row, now=row.started + 7200) == ["fast-demo", "train-dsr", "finished", "2h", "4", "26.00",
                                                          "+4.00", "-", "-", "-"]


def test_metrics_csv_has_every_metric_of_every_run(runs):
    text = metrics_csv([runs["finished"], runs["stopped"]])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6 + 2
    assert {"loss", "l1", "psnr", "bicubic_psnr", "top1"} <= set(rows[0])
    assert rows[1]["psnr"] == "23.0" and rows[-1]["top1"] == "0.2" and rows[-1]["psnr"] == ""
    with pytest.raises(WorkbenchError, match="not a run directory"):
        metrics_csv([runs["finished"].parent])


def test_cli_runs_json_lists_state_and_metrics(runs, capsys):
    assert main(["runs", str(runs["finished"].parent), "--json", "--sort", "psnr"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 6
    by_name = {entry["name"]: entry for entry in listed}
    dead = by_name[runs["dead"].name]
    assert dead["state"] == "dead" and dead["state"] != "finished"
    assert by_name[runs["fast"].name]["best_psnr"] == 26.0 and by_name[runs["fast"].name]["gain"] == 4.0
    assert by_name[runs["evaluate"].name]["rank1"]["hr"] == 0.95
    assert listed[0]["name"] == runs["fast"].name   # sorted by PSNR, best first


def test_cli_runs_table_filters_and_errors(runs, capsys):
    assert main(["runs", str(runs["finished"].parent), "--job", "finetune"]) == 0
    out = capsys.readouterr().out
    assert "1 runs in" in out and "stopped" in out and "train-dsr" not in out
    assert main(["runs", str(runs["finished"].parent / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # argparse names the valid sort keys
        main(["runs", str(runs["finished"].parent), "--sort", "colour"])


def test_cli_export_csv_to_file(runs, tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert main(["export-csv", str(runs["fast"]), str(runs["finished"]), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {r["run"] for r in rows} == {runs["fast"].name, runs["finished"].name} and len(rows) == 14
    assert main(["export-csv", str(tmp_path)]) == 2
    assert "not a run" in capsys.readouterr().err
