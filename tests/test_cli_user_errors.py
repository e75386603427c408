"""CLI defects a new user hit: a closed stdout, a missing --data for the app, --resume of a run of another kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from run_factory import make_runs
from workbench.cli.main import main


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    return make_runs(tmp_path / "runs")


@pytest.mark.parametrize("args", [["runs", "{runs}", "--json"], ["presets", "show", "cpu-demo", "--toml"],
                                  ["tips", "{finished}"]])
def test_a_reader_that_closed_stdout_ends_the_command_quietly(runs, tmp_path, args):
    """`vlr-workbench runs --json | head -1`: the reader is gone before the output; no traceback, exit 1."""
    argv = [a.format(runs=tmp_path / "runs", finished=runs["finished"]) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)                      # closed before the command writes anything: every write fails
    try:
        done = subprocess.run([sys.executable, "-m", "workbench.cli.main", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr and "Exception ignored" not in done.stderr
    assert done.stderr == ""


def test_the_app_refuses_a_data_folder_that_does_not_exist(tmp_path, monkeypatch, capsys):
    import workbench.app.launch as launch

    monkeypatch.setattr(launch, "launch_app", lambda **kwargs: pytest.fail("the app opened"))
    missing = tmp_path / "no-such-data"
    assert main(["--data", str(missing)]) == 2
    err = flat(capsys.readouterr().err)
    assert f"--data {missing}: the dataset root {missing} does not exist" in err
    assert "vlr-workbench prepare" in err and "leave --data out" in err and "Traceback" not in err
    (tmp_path / "a-file").write_text("x")
    assert main(["--data", str(tmp_path / "a-file")]) == 2
    assert "is a file, not a folder" in flat(capsys.readouterr().err)


def test_the_app_opens_on_an_existing_data_folder(tmp_path, monkeypatch):
    import workbench.app.launch as launch

    opened = []
    monkeypatch.setattr(launch, "launch_app", lambda **kwargs: opened.append(kwargs) or 0)
    monkeypatch.delenv(launch.STORAGE_ENV, raising=False)
    assert main(["--data", str(tmp_path)]) == 0
    assert opened == [{"preset": None, "data": str(tmp_path), "storage": None}]
    monkeypatch.setenv(launch.STORAGE_ENV, "postgresql://u:pw@db.example/optuna")    # as `serve --storage` hands it on
    assert main(["--data", str(tmp_path)]) == 0
    assert opened[-1]["storage"] == "postgresql://u:pw@db.example/optuna"


@pytest.mark.parametrize("command", [["train-dsr"], ["finetune"], ["pretrain"], ["pipeline", "--preset", "cpu-demo"]])
def test_resume_of_an_evaluate_run_says_evaluate_runs_cannot_be_resumed(runs, capsys, command):
    evaluate = runs["evaluate"]
    before = sorted(os.listdir(evaluate.parent))
    assert main([*command, "--resume", str(evaluate)]) == 2
    err = flat(capsys.readouterr().err)
    assert f"--resume {evaluate}: this is an evaluate run, and evaluate runs cannot be resumed" in err
    assert "has no last.pt" not in err and "Traceback" not in err
    assert sorted(os.listdir(evaluate.parent)) == before          # nothing started


def test_an_evaluate_run_under_another_name_is_known_by_its_eval_json(runs, tmp_path, capsys):
    renamed = tmp_path / "my-results"
    runs["evaluate"].rename(renamed)
    assert main(["train-dsr", "--resume", str(renamed)]) == 2
    assert "evaluate runs cannot be resumed" in flat(capsys.readouterr().err)


def test_resume_of_a_run_of_another_training_job_names_the_right_command(runs, capsys):
    stopped = runs["stopped"]             # a stopped finetune run
    assert main(["train-dsr", "--resume", str(stopped)]) == 2
    err = flat(capsys.readouterr().err)
    assert f"this is a finetune run, not a train-dsr run. Continue it with `vlr-workbench finetune --resume " \
           f"{stopped}`" in err


def test_a_flag_prefix_is_not_taken_for_the_flag(capsys):
    """issue 37: argparse's prefix matching took --epoch 2 for --epochs 2; a typo must be an error."""
    with pytest.raises(SystemExit) as exc:
        main(["train-dsr", "--preset", "cpu-demo", "--epoch", "2"])
    assert exc.value.code == 2 and "--epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--probe", "blur=1"])
    assert exc.value.code == 2
