"""Issue 36, item 7: a study's files and a sweep's flags are untrusted input. Each bad one is one message and
exit 2 before anything is written (no traceback, nothing outside runs_dir/sweeps, no byte added to a journal)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import create_trial

from engine import presets
from engine.sweep import journal_check
from workbench.cli.main import main

SPACE = '[params]\n"dsr.learning_rate" = { low = 1e-4, high = 1e-3 }\n'


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A preset whose runs_dir is tmp_path/work/runs, a space file, and study `done` with one complete trial."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(work / "runs")})
    path = presets.save(presets.derive(preset, "p"), tmp_path / "p.toml")
    (tmp_path / "space.toml").write_text(SPACE)
    journal = work / "runs" / "sweeps" / "done.journal"
    journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="done", storage=JournalStorage(JournalFileBackend(str(journal))),
                                direction="maximize")
    study.set_user_attr("setup", {"objective": "val.psnr", "job": "train-dsr", "base_preset": "p"})
    run = work / "runs" / "trial-0"
    run.mkdir()
    presets.save(presets.derive(preset.with_changes({"dsr.learning_rate": 2e-4}), "p"), run / "preset.toml")
    study.add_trial(create_trial(params={"dsr.learning_rate": 2e-4}, value=21.0, user_attrs={"run_dir": str(run)},
                                 distributions={"dsr.learning_rate": FloatDistribution(1e-4, 1e-3)}))
    return {"preset": str(path), "journal": journal, "root": tmp_path}


def _refused(argv: list[str], capsys, *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("study", ["../../x", "..", "a/b", ".hidden"])
def test_a_study_name_that_would_leave_the_sweeps_folder_is_refused(setup, capsys, study):
    before = _files(setup["root"].parent)
    _refused(["sweep", "--preset", setup["preset"], "--space", "space.toml", "--study", study], capsys, "study name")
    _refused(["sweep", "--preset", setup["preset"], "show", study], capsys, "study name")
    assert _files(setup["root"].parent) == before


@pytest.mark.parametrize("target", ["../../p", "../q/r/s", "no-such-folder/p.toml"])
def test_save_best_writes_a_preset_name_or_a_toml_path_in_a_folder_that_exists(setup, capsys, target):
    before = _files(setup["root"].parent)
    _refused(["sweep", "--preset", setup["preset"], "save-best", "done", target], capsys, target)
    assert _files(setup["root"].parent) == before
    capsys.readouterr()
    assert main(["sweep", "--preset", setup["preset"], "save-best", "done", "winner.toml"]) == 0
    assert presets.load(str(setup["root"] / "winner.toml")).values()["dsr.learning_rate"] == 2e-4


def _damage(journal: Path, how: str) -> bytes:
    data = journal.read_bytes()
    if how == "not-utf8":
        data = data[:40] + b"\xff" + data[41:]
    elif how == "garbage":
        data += b"this is not json\n"
    else:                                            # the last record cut short
        data = data[:-20]
    journal.write_bytes(data)
    return data


@pytest.mark.parametrize("how,said", [("not-utf8", "byte 40 (line 1) is not UTF-8"),
                                      ("garbage", "is not a journal record"), ("cut", "cut short at byte")])
def test_a_damaged_journal_is_one_message_and_nothing_is_written_to_it(setup, capsys, monkeypatch, how, said):
    monkeypatch.setattr(journal_check, "SETTLE_S", 0.0)
    journal = setup["journal"]
    damaged = _damage(journal, how)
    for argv in (["sweep", "--preset", setup["preset"], "show", "done"], ["report", "done", "--preset", setup["preset"]],
                 ["sweep", "--preset", setup["preset"], "save-best", "done", "x"],
                 ["sweep", "--preset", setup["preset"], "--space", "space.toml", "--study", "done"]):
        _refused(argv, capsys, str(journal), said, "truncate -s")
    assert journal.read_bytes() == damaged                   # the resume did not append to the damaged file
    assert not (setup["root"] / "work" / "runs" / "sweeps" / "done" / "p.toml").exists()


def test_a_file_where_the_studys_control_folder_goes_is_one_message(setup, capsys):
    (setup["journal"].parent / "asfile").write_text("not a folder")
    _refused(["sweep", "--preset", setup["preset"], "--space", "space.toml", "--study", "asfile"], capsys, "is a file")
    assert not (setup["journal"].parent / "asfile.journal").exists()       # refused before the storage


@pytest.mark.parametrize("spec,said", [
    ('{ low = 1e-4, high = 1e-3, step = -1e-4 }', "`step` must be a number above 0"),
    ('{ low = 1e-4, high = 1e-3, step = 0.0 }', "`step` must be a number above 0"),
    ('{ low = 1e-4, high = 1e-3, step = 0.5 }', "wider than the range"),
    ('{ low = 1e-4, high = 1e-3, choices = [1e-4] }', "Keep one of the two forms"),
])
def test_a_space_that_optuna_would_fail_or_ignore_is_refused_before_the_study_opens(setup, capsys, spec, said):
    (setup["root"] / "bad.toml").write_text(f'[params]\n"dsr.learning_rate" = {spec}\n')
    _refused(["sweep", "--preset", setup["preset"], "--space", "bad.toml", "--study", "fresh"], capsys, said)
    assert not (setup["journal"].parent / "fresh.journal").exists()            # no RUNNING trial left anywhere


def test_fractional_bounds_or_step_on_a_whole_number_key_are_refused(setup, capsys):
    for spec in ('{ low = 1.5, high = 3.7 }', '{ low = 1, high = 9, step = 1.5 }'):
        (setup["root"] / "bad.toml").write_text(f'[params]\n"dsr.epochs" = {spec}\n')
        _refused(["sweep", "--preset", setup["preset"], "--space", "bad.toml", "--study", "fresh"], capsys,
                 "whole-number key")


@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(setup, capsys, timeout):
    _refused(["sweep", "--preset", setup["preset"], "--space", "space.toml", "--study", "fresh", "--timeout", timeout],
             capsys, f"--timeout {float(timeout)}")


def test_one_trials_unreadable_preset_is_skipped_with_a_warning_by_report_and_save_best(setup, capsys):
    journal = setup["journal"]
    study = optuna.load_study(study_name="done", storage=JournalStorage(JournalFileBackend(str(journal))))
    broken = setup["root"] / "work" / "runs" / "trial-1"
    broken.mkdir()
    (broken / "preset.toml").write_bytes(b"\xff[dsr\n")
    study.add_trial(create_trial(params={"dsr.learning_rate": 3e-4}, value=20.0, user_attrs={"run_dir": str(broken)},
                                 distributions={"dsr.learning_rate": FloatDistribution(1e-4, 1e-3)}))
    capsys.readouterr()
    assert main(["report", "done", "--preset", setup["preset"]]) == 0
    assert "Traceback" not in "".join(capsys.readouterr())
    assert (journal.parent / "done-report.md").is_file()
    assert main(["sweep", "--preset", setup["preset"], "save-best", "done", "best.toml"]) == 0   # trial 0, readable


def test_an_objective_the_trials_do_not_record_stops_the_sweep_after_the_first_trial(tiny, tiny_root, tmp_path,
                                                                                     capsys):
    """summary.KEY cannot be checked before a trial ran: the first finished trial without it ends the sweep with
    one message, that trial recorded as failed (not left RUNNING), and no second trial trains."""
    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--trials", "3", "--objective", "summary.no_such_key"]
    _refused(argv, capsys, "recorded no finite summary.no_such_key", "The sweep stops here")
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "show", "tiny-sweep", "--json"]) == 0
    import json

    trials = json.loads(capsys.readouterr().out)["trials"]
    assert [t["state"] for t in trials] == ["fail"] and "no_such_key" in trials[0]["error"]
