"""The app's Sweeps tab (issue 22): a study's trials live, the best-so-far chart and importances; n starts a
sweep in its own process, x stops it, b saves the best trial's preset, Enter opens a trial and a attaches.
Snapshots during and after a sweep at 120x40 and 80x24 (a study written directly: fixed data)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import optuna
import pytest

from workbench.app.widgets.tips_panel import TipsPanel
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial
from textual.widgets import DataTable, Input, TabbedContent, TextArea

from engine import presets
from engine.sweep.storage import rdb_url
from workbench.app.widgets import sweeps_panel
from workbench.app.widgets.sweep_dialog import SweepDialog
from workbench.app.widgets.sweeps_panel import SweepsPanel
from workbench.app.widgets.vram_gauge import VramGauge

from app_helpers import capture_notes, make_app
from pg_server import PASSWORD
from test_app_jobs import log_text
from workbench.cli.main import main
from waiting import wait_for
from tiny import tiny_dsr_data, tiny_dsr_preset

WIDE, NARROW = (120, 40), (80, 24)
DISTRIBUTIONS = {"dsr.learning_rate": FloatDistribution(1e-4, 1e-3, log=True),
                 "dsr.base_channels": CategoricalDistribution([16, 32])}
TRIALS = [  # learning rate, channels, value, state, label
    (2e-4, 16, 21.5, TrialState.COMPLETE, "base: run-1"),
    (5e-4, 32, 23.25, TrialState.COMPLETE, "tip: lower the learning rate (run-1)"),
    (8e-4, 16, 19.0, TrialState.PRUNED, None),
    (3e-4, 32, 22.0, TrialState.COMPLETE, None),
]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # cpu-demo's runs_dir "runs" is tmp_path/runs
    monkeypatch.setattr(sweeps_panel, "POLL_SECONDS", 0.2)


def write_study(root: Path, *, running: bool, url: str | None = None) -> Path:
    """Study demo-sweep in root/runs (or in the database at ``url``): four finished trials (one pruned) and,
    ``running``, a fifth trial and a live controller (this process)."""
    sweeps = root / "runs" / "sweeps"
    (sweeps / "demo-sweep").mkdir(parents=True)
    storage = rdb_url(url) if url else JournalStorage(JournalFileBackend(str(sweeps / "demo-sweep.journal")))
    study = optuna.create_study(study_name="demo-sweep", storage=storage, direction="maximize")
    study.set_user_attr("setup", {"objective": "val.psnr", "job": "train-dsr", "base_preset": "cpu-demo",
                                  "objective2": None, "baselines": False, "folds": None})
    base = presets.load("cpu-demo")
    for number, (rate, channels, value, state, label) in enumerate(TRIALS + ([(4e-4, 16, None, TrialState.RUNNING,
                                                                               None)] if running else [])):
        run = root / "runs" / f"trial-{number}"
        run.mkdir()
        params = {"dsr.learning_rate": rate, "dsr.base_channels": channels}
        presets.save(presets.derive(base.with_changes(params), "cpu-demo"), run / "preset.toml")
        attrs = {"run_dir": str(run), **({"label": label} if label else {}),
                 **({"pruned_at_epoch": 2} if state == TrialState.PRUNED else {})}
        if state == TrialState.RUNNING:
            study.enqueue_trial(params, user_attrs=attrs)
            study.ask(DISTRIBUTIONS)
            continue
        study.add_trial(create_trial(params=params, distributions=DISTRIBUTIONS, state=state, user_attrs=attrs,
                                     value=value if state == TrialState.COMPLETE else None,
                                     intermediate_values={1: value} if state == TrialState.PRUNED else None))
    status = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(), "heartbeat": time.time(),
              "job": "sweep"} if running else {"state": "finished", "job": "sweep"}
    (sweeps / "demo-sweep" / "status.json").write_text(json.dumps(status))
    return sweeps


async def show_sweeps(pilot, trials: int) -> SweepsPanel:
    await wait_for(pilot, lambda: pilot.app.query_one(VramGauge).reading is not None, what="the VRAM reading")
    pilot.app.query_one(TabbedContent).active = "tab-sweeps"
    panel = pilot.app.query_one(SweepsPanel)
    await wait_for(pilot, lambda: panel.snapshot is not None and len(panel.snapshot["trials"]) == trials,
                   what="the study's trials")
    await pilot.pause(0.3)
    pilot.app.clear_notifications()
    await pilot.pause()
    return panel


@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["120x40", "80x24"])
@pytest.mark.parametrize("running", [True, False], ids=["during", "after"])
def test_sweeps_tab_snapshot(snap_compare, tmp_path, size, running):
    write_study(tmp_path, running=running)
    assert snap_compare(make_app(remember=False), terminal_size=size,
                        run_before=lambda pilot: show_sweeps(pilot, 5 if running else 4))


async def test_the_tab_shows_trials_best_and_importances_and_its_keys_act_on_them(tmp_path):
    write_study(tmp_path, running=False)
    app = make_app(remember=False)
    notes = capture_notes(app)
    async with app.run_test(size=WIDE) as pilot:
        panel = await show_sweeps(pilot, 4)
        table = panel.query_one("#sweeps-table", DataTable)
        assert [table.get_row_at(i)[1].plain for i in range(4)] == ["complete", "complete", "pruned @2", "complete"]
        assert str(table.get_row_at(1)[2]) == "23.25 *"                   # the best trial, marked
        assert panel.best["number"] == 1
        assert panel.best_so_far_values() == ([0, 1, 3], [21.5, 23.25, 22.0], [21.5, 23.25, 23.25])
        assert "importances" in str(panel.query_one("#sweeps-importances").render())
        await pilot.press("x")                                              # the controller has finished
        await wait_for(pilot, lambda: any("no sweep to stop" in n for n in notes), what="x's reason")
        table.move_cursor(row=1)
        await pilot.press("a")                                              # a finished trial: cannot attach
        await wait_for(pilot, lambda: any("trial-1" in n for n in notes), what="a's reason")
        await pilot.press("b")                                              # save the best trial's preset
        await wait_for(pilot, lambda: pilot.app.screen.query("#saveas-name"), what="the save-as dialog")
        # the suggestion is the CLI's name, from the study's base preset (not the app's selected one)
        assert pilot.app.screen.query_one("#saveas-name", Input).value == "cpu-demo-best-demo-sweep"
        pilot.app.screen.query_one("#saveas-name", Input).value = "lr-winner"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not pilot.app.screen.query("#saveas-name"), what="the dialog to close")
        saved = presets.load("lr-winner").values()
        assert (saved["dsr.learning_rate"], saved["dsr.base_channels"]) == (5e-4, 32)
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")                                          # opens the trial's run
        await wait_for(pilot, lambda: pilot.app.query_one(TipsPanel).run == tmp_path / "runs" / "trial-0", what="the open run")
        assert pilot.app.query_one(TabbedContent).active in ("tab-charts", "tab-results")   # Enter leaves Sweeps


async def test_outside_the_tab_its_keys_say_where_they_act_and_x_a_keep_their_other_meanings(tmp_path):
    app = make_app(remember=False)
    notes = capture_notes(app)
    async with app.run_test(size=WIDE) as pilot:
        await wait_for(pilot, lambda: pilot.app.query_one(VramGauge).reading is not None, what="the VRAM reading")
        await pilot.press("n")
        await wait_for(pilot, lambda: any("on the Sweeps tab" in n for n in notes), what="n's reason")
        await pilot.press("a")                                              # the Presets tab: save as
        await wait_for(pilot, lambda: pilot.app.screen.query("#saveas-name"), what="the save-as dialog")


def _tiny_app(tmp_path: Path, epochs: int, storage: str | None = None):
    """The app on a tiny preset (8x8 faces, one thread, ``epochs``) and tiny generated data."""
    data = tiny_dsr_data(tmp_path / "data", identities=8, per_identity=4)
    return make_app(str(_tiny_preset(tmp_path, epochs)), data=str(data), remember=False, storage=storage)


def _tiny_preset(tmp_path: Path, epochs: int) -> Path:
    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.epochs": epochs, "dsr.warmup_epochs": 0,
                                                   "runtime.num_threads": 1})
    return presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")


async def _start_from_dialog(pilot, trials: int, storage: str | None = None) -> None:
    pilot.app.query_one(TabbedContent).active = "tab-sweeps"
    await pilot.pause()
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SweepDialog), what="the sweep dialog")
    dialog = pilot.app.screen
    dialog.query_one("#sweep-trials", Input).value = str(trials)
    if storage is not None:
        dialog.query_one("#sweep-storage", Input).value = storage
    dialog.query_one("#sweep-space", TextArea).text = '[params]\n"dsr.learning_rate" = { low = 5e-4, high = 3e-3 }\n'
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: not isinstance(pilot.app.screen, SweepDialog), what="the sweep to start")


async def test_n_starts_a_sweep_in_its_own_process_and_the_tab_follows_it_to_the_end(tmp_path):
    app = _tiny_app(tmp_path, epochs=1)
    async with app.run_test(size=WIDE) as pilot:
        await _start_from_dialog(pilot, trials=2)
        panel = pilot.app.query_one(SweepsPanel)
        await wait_for(pilot, lambda: panel.snapshot and panel.snapshot["state"] == "finished"
                       and [t["state"] for t in panel.snapshot["trials"]] == ["complete", "complete"],
                       timeout=120, what="two complete trials")
        assert panel.snapshot["study"] == "tiny-sweep"
        control = tmp_path / "runs" / "sweeps" / "tiny-sweep"
        assert "dsr.learning_rate" in (control / "space.toml").read_text()
        assert presets.load(control / "tiny.toml").values()["dsr.epochs"] == 1      # the base, as the app held it
        await wait_for(pilot, lambda: not pilot.app.jobs.detached_jobs, timeout=30, what="the process to be reaped")


async def test_x_stops_a_running_sweep_whose_trial_keeps_its_checkpoint(tmp_path):
    app = _tiny_app(tmp_path, epochs=200)
    async with app.run_test(size=WIDE) as pilot:
        await _start_from_dialog(pilot, trials=3)
        panel = pilot.app.query_one(SweepsPanel)
        await wait_for(pilot, lambda: panel.snapshot and panel.snapshot["state"] == "running" and any(
            t["run_dir"] and (Path(t["run_dir"]) / "last.pt").is_file() for t in panel.snapshot["trials"]),
                       timeout=120, what="a running trial with a checkpoint")
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(pilot, lambda: panel.snapshot["state"] == "stopped", timeout=60, what="the sweep to stop")
        trial = panel.snapshot["trials"][0]
        assert trial["state"] == "stopped"               # not "fail": queued again for the resume, with its checkpoint
        assert json.loads((Path(trial["run_dir"]) / "status.json").read_text())["state"] == "stopped"


async def test_the_tab_lists_a_postgres_study_beside_the_journals_and_n_starts_a_sweep_on_it(tmp_path, postgres_url):
    """Issue 36: the app on a PostgreSQL storage (``vlr-workbench --storage URL``) lists the database's studies
    (its server named, the password never shown), and a sweep started from the tab runs on that database."""
    sweeps = write_study(tmp_path, running=False, url=postgres_url)
    (sweeps / "demo-sweep" / "status.json").unlink()             # its controller ran on another machine
    app = _tiny_app(tmp_path, epochs=1, storage=postgres_url)
    notes = capture_notes(app)
    async with app.run_test(size=WIDE) as pilot:
        panel = await show_sweeps(pilot, 4)
        assert panel.snapshot["key"].startswith("demo-sweep · 127.0.0.1:") and panel.snapshot["storage"] == postgres_url
        head = str(panel.query_one("#sweeps-head").render())
        assert " on 127.0.0.1:" in head and PASSWORD not in head
        await pilot.press("x")                                   # no controller of it on this host
        await wait_for(pilot, lambda: any("runs on this host" in n for n in notes), what="x's reason")
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, SweepDialog), what="the sweep dialog")
        shown = pilot.app.screen.query_one("#sweep-storage", Input).value      # the app's storage, password hidden
        assert shown == postgres_url.replace(PASSWORD, "***") and pilot.app.screen.values()["storage"] == postgres_url
        await pilot.press("escape")
        await _start_from_dialog(pilot, trials=1)
        await wait_for(pilot, lambda: panel.snapshot and panel.snapshot["study"] == "tiny-sweep"
                       and panel.snapshot["state"] == "finished"
                       and [t["state"] for t in panel.snapshot["trials"]] == ["complete"],
                       timeout=120, what="the new study's complete trial")
        assert [s.name for s in panel.studies][:2] == ["tiny-sweep", "demo-sweep"]   # the database's, newest first
        await wait_for(pilot, lambda: not pilot.app.jobs.detached_jobs, timeout=30, what="the process to be reaped")
    assert len(optuna.load_study(study_name="tiny-sweep", storage=rdb_url(postgres_url)).trials) == 1
    assert not (tmp_path / "runs" / "sweeps" / "tiny-sweep.journal").exists()        # not on the journal


async def test_a_storage_that_does_not_answer_is_one_message_on_the_tab_and_in_the_log(tmp_path):
    url = "postgresql://someone:s3cret@127.0.0.1:1/nothing"          # nothing listens on port 1
    write_study(tmp_path, running=False)
    app = _tiny_app(tmp_path, epochs=1)
    async with app.run_test(size=WIDE) as pilot:
        panel = await show_sweeps(pilot, 4)                      # the journal study, before any storage
        await _start_from_dialog(pilot, trials=1, storage=url)  # its process exits 2 before any trial
        await wait_for(pilot, lambda: "cannot read the studies of" in str(panel.query_one("#sweeps-head").render()),
                       timeout=60, what="the storage's error on the tab")
        head = str(panel.query_one("#sweeps-head").render())
        assert "no server answers" in head and "s3cret" not in head and "someone:***@" in head
        assert [s.name for s in panel.studies] == ["demo-sweep"]        # the journal studies stay listed
        await wait_for(pilot, lambda: not pilot.app.jobs.detached_jobs, timeout=60, what="the process to be reaped")
        text = await log_text(pilot)
    text = " ".join(text.split())                               # the log wraps long lines
    assert "exited with code 2: error: cannot open the study's storage" in text and "s3cret" not in text, text
    assert not list((tmp_path / "runs").glob("*-tiny-*"))      # no trial run


def test_an_in_memory_sqlite_storage_is_refused_before_the_app_opens(capsys):
    assert main(["--storage", "sqlite:///"]) == 2
    assert "in-memory SQLite database" in capsys.readouterr().err
    assert main(["--storage", "postgresql://u:pw@127.0.0.1/db", "runs"]) == 2     # the app's flag, not the command's
    said = capsys.readouterr().err
    assert "give it after the command" in said and ":pw@" not in said
