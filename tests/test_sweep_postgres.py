"""Issue 36: sweeps on a real PostgreSQL server (a throwaway cluster from tests/pg_server.py).

Skipped where the server binaries or psycopg are missing, except under CI (VLR_WORKBENCH_REQUIRE_POSTGRES=1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import presets
from workbench.cli.main import main
from tiny import tiny_dsr_preset

SPACE = """[params]
"dsr.learning_rate" = { low = 5e-4, high = 3e-3, log = true }
"dsr.base_channels" = { choices = [8, 16] }
"""
REPO = Path(__file__).resolve().parents[1]
EPOCHS = 30      # a trial of a few seconds: a kill or an outage lands mid-trial, not after it


def _controllers(tiny, tiny_root, tmp_path, url: str, count: int, trials: int) -> list[subprocess.Popen]:
    (tmp_path / "space.toml").write_text(SPACE)
    argv = [sys.executable, "-m", "workbench.cli.main", "sweep", "--preset", str(tiny), "--data", str(tiny_root),
            "--space", str(tmp_path / "space.toml"), "--trials", str(trials), "--sampler", "random", "--no-prune",
            "--storage", url]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return [subprocess.Popen(argv + ["--seed", str(seed)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=tmp_path) for seed in range(1, count + 1)]


def _show(tiny, url: str, capsys) -> dict:
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "show", "tiny-sweep", "--storage", url, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("count,trials", [(2, 4), (3, 5)])
def test_controllers_on_one_postgres_study_run_exactly_the_budget_each_trial_its_own_run(
        tiny, tiny_root, tmp_path, capsys, postgres_url, count, trials):
    """Several `sweep` processes started at the same moment on a fresh database (the schema-creation race), one
    study: exactly N complete trials, N run directories, each sweep.json naming its own trial."""
    workers = _controllers(tiny, tiny_root, tmp_path, postgres_url, count, trials)
    codes = [w.wait(timeout=420) for w in workers]
    assert codes == [0] * count, [w.stderr.read()[-3000:] for w in workers]
    shown = _show(tiny, postgres_url, capsys)
    complete = [t for t in shown["trials"] if t["state"] == "complete"]
    assert len(complete) == trials
    runs = [t["run_dir"] for t in complete]
    assert len(set(runs)) == trials
    assert sorted(json.loads((Path(r) / "sweep.json").read_text())["trial"] for r in runs) == \
        sorted(t["number"] for t in complete)


def test_save_best_and_report_read_the_postgres_study(tiny, tiny_root, tmp_path, capsys, postgres_url):
    workers = _controllers(tiny, tiny_root, tmp_path, postgres_url, 1, 2)
    assert [w.wait(timeout=300) for w in workers] == [0], workers[0].stderr.read()[-3000:]
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "save-best", "tiny-sweep", "tiny-best", "--storage",
                 postgres_url]) == 0
    assert "tiny-best" in capsys.readouterr().out
    report = tmp_path / "report.md"
    assert main(["report", "tiny-sweep", "--preset", str(tiny), "--storage", postgres_url, "--out", str(report)]) == 0
    assert "tiny-sweep" in report.read_text()


def test_unreachable_postgres_storages_are_one_message_and_exit_2_before_any_trial(
        tiny, tiny_root, tmp_path, capsys, postgres, postgres_url, monkeypatch):
    from pg_server import free_port

    (tmp_path / "space.toml").write_text(SPACE)
    database = postgres_url.rsplit("/", 1)[1]
    cases = [
        (postgres.url(database, password="wrong"), "refused the user or password"),
        (postgres_url.replace("127.0.0.1", "no-such-host.invalid"), "host name is unknown"),
        (postgres.url("no_such_database"), "database does not exist"),
        (postgres_url.replace(f":{postgres.port}/", f":{free_port()}/"), "no server answers"),
    ]
    for url, says in cases:
        capsys.readouterr()
        code = main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                     "--trials", "1", "--storage", url])
        error = " ".join(capsys.readouterr().err.split())
        assert code == 2 and says in error and "Traceback" not in error, (url, error)
        assert "wrong" not in error and "sweep-secret" not in error          # the password is masked
    assert not list((tmp_path / "runs").glob("*-train-dsr"))                  # no trial started

    import builtins

    real_import = builtins.__import__

    def no_driver(name, *args, **kwargs):
        if name.startswith("psycopg"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_driver)
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "1", "--storage", postgres_url]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "driver is not installed" in error and "[postgres]" in error, error


def test_four_processes_opening_a_fresh_database_at_once_all_get_the_schema(postgres_url):
    """Optuna's schema creation races on a fresh PostgreSQL database (a unique violation in pg_type for all
    but one of them, seen with plain RDBStorage); open_storage waits for the winner's schema instead."""
    import time

    from engine.sweep.storage import rdb_url

    start = time.time() + 3
    code = (f"import time; time.sleep(max(0, {start} - time.time()))\n"
            "from engine.sweep.storage import open_storage\n"
            f"storage = open_storage({postgres_url!r}, None)\n"
            "print(len(storage.get_all_studies()))\n")
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(4)]
    done = [(w.wait(timeout=120), w.stdout.read().strip(), w.stderr.read()[-1500:]) for w in workers]
    assert [code for code, _out, _err in done] == [0] * 4, done
    assert [out for _code, out, _err in done] == ["0"] * 4
    assert rdb_url(postgres_url).startswith("postgresql+psycopg://")      # psycopg 3 for the bare scheme


def _await(condition, timeout: float, what: str):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_controller_killed_mid_trial_leaves_no_trial_running_and_the_same_command_resumes_it(
        tiny_root, tmp_path, capsys, postgres_url):
    """SIGKILL a controller while its trial trains: `sweep show` says dead (not running) at once, and the same
    command again fails that trial, resumes its run from last.pt and completes the budget, no epoch logged twice
    (the project's stale-trial rule, keyed to the run's status: the same rule as on the journal)."""
    import signal

    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.epochs": EPOCHS, "dsr.warmup_epochs": 0})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--trials", "2", "--sampler", "random", "--no-prune", "--storage", postgres_url]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    controller = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", *argv], env=env, cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _await(lambda: next((tmp_path / "runs").glob("*-train-dsr/last.pt"), None), 240, "a trial's last.pt")
    finally:
        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait(timeout=30)
    shown = _show(tiny, postgres_url, capsys)
    dead = [t for t in shown["trials"] if t["state"] == "dead"]
    assert len(dead) == 1 and not [t for t in shown["trials"] if t["state"] == "running"], shown["trials"]
    killed_run = Path(dead[0]["run_dir"])
    assert (killed_run / "last.pt").is_file()

    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr()
    assert "left running by a process that is gone" in out.out + out.err
    shown = _show(tiny, postgres_url, capsys)
    complete = [t for t in shown["trials"] if t["state"] == "complete"]
    assert len(complete) == 2
    killed = next(t for t in shown["trials"] if t["state"] == "fail")
    retry = next(t for t in complete if t["label"] == f"retry of #{killed['number']}")
    assert retry["run_dir"] == killed["run_dir"] == str(killed_run)        # resumed in its own run, not a new one
    epochs = [json.loads(line).get("epoch") for line in (killed_run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("split") == "val"]
    assert epochs == list(range(1, EPOCHS + 1))                              # every epoch once, to the end


def _epochs_once_to(run: Path, last: int) -> bool:
    epochs = [json.loads(line).get("epoch") for line in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("split") == "val"]
    return epochs == list(range(1, last + 1))


def _outage_sweep(tmp_path, tiny_root, url: str, wait: float, prune: bool = False, epochs: int = EPOCHS,
                  extra: tuple[str, ...] = ()):
    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.epochs": epochs, "dsr.warmup_epochs": 0})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--trials", "2", "--sampler", "random", "--storage", url, "--storage-wait", str(wait)]
    argv += ([] if prune else ["--no-prune"]) + list(extra)  # pruning reports every epoch to the storage
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    controller = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", *argv], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = _await(lambda: next((tmp_path / "runs").glob("*-train-dsr/last.pt"), None), 240,
                        "the first trial's last.pt")
    return tiny, argv, controller, checkpoint.parent


def _down_until_it_ends(postgres, controller) -> str:
    """Pause the server until the controller exits; its output, whitespace folded."""
    postgres.pause()
    try:
        out, _ = controller.communicate(timeout=300)
    finally:
        postgres.resume()
    assert controller.returncode == 2, out[-3000:]
    return " ".join(out.split())


def test_a_server_restart_mid_trial_is_ridden_out_and_the_budget_completes(tiny_root, tmp_path, capsys,
                                                                             postgres, postgres_url):
    tiny, _argv, controller, run = _outage_sweep(tmp_path, tiny_root, postgres_url, wait=60)
    postgres.restart()                                      # pg_ctl restart -m fast: every connection is cut
    out, _ = controller.communicate(timeout=300)
    assert controller.returncode == 0, out[-3000:]
    shown = _show(tiny, postgres_url, capsys)
    assert [t["state"] for t in shown["trials"]] == ["complete", "complete"]
    assert _epochs_once_to(run, EPOCHS)


@pytest.mark.parametrize("prune", [True, False], ids=["mid-trial", "at-its-end"])
def test_a_server_down_longer_than_the_wait_stops_the_sweep_and_the_same_command_goes_on(
        tiny_root, tmp_path, capsys, postgres, postgres_url, prune):
    """The server stays down past --storage-wait: mid-trial (pruning reports every epoch) the trial stops with
    its checkpoint; at its end (no pruning: only the result is told) the run is finished but its result not
    recorded. Either way one message says how to go on, and the same command completes the budget, nothing
    run twice."""
    tiny, argv, controller, run = _outage_sweep(tmp_path, tiny_root, postgres_url, wait=3, prune=prune)
    said = _down_until_it_ends(postgres, controller)
    assert said.count("does not answer") == 1 and "has not answered for 3 s" in said, said[-2000:]
    ended = "stopped with its checkpoint" if prune else "ended before its result could be recorded"
    assert f"run {run} {ended}" in said and "run the same command" in said, said[-1500:]
    assert "Traceback" not in said and "sweep-secret" not in said           # the password stays masked
    assert json.loads((run / "status.json").read_text())["state"] == ("stopped" if prune else "finished")

    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    said = " ".join("".join(capsys.readouterr()).split())
    shown = _show(tiny, postgres_url, capsys)
    complete = [t for t in shown["trials"] if t["state"] == "complete"]
    assert len(complete) == 2 and len({t["run_dir"] for t in complete}) == 2, \
        ([(t["number"], t["state"], t["error"]) for t in shown["trials"]], said[:300])
    mine = next(t for t in complete if t["run_dir"] == str(run))
    if prune:
        assert "was stopped with its run: failed; it resumes from its checkpoint" in said
        assert mine["label"].startswith("retry of #")
    else:
        assert "its result is recorded now" in said and mine["label"] is None and mine["number"] == 0
        assert len(shown["trials"]) == 2                                   # nothing failed, nothing retried
    assert _epochs_once_to(run, EPOCHS)                           # resumed where it stopped: no epoch twice


def test_a_parallel_sweep_whose_server_stays_down_stops_every_trial_with_its_checkpoint_and_goes_on(
        tiny_root, tmp_path, capsys, postgres, postgres_url):
    """--parallel 2 and the server down past --storage-wait: the controller stops both running trials (each saves
    its checkpoint), waits for them and exits 2 saying how to go on; the same command resumes both in their own
    runs and completes the budget, no epoch twice."""
    epochs = 150                                 # long enough that neither trial ends before its stop request
    tiny, argv, controller, _first = _outage_sweep(tmp_path, tiny_root, postgres_url, wait=3, prune=True,
                                                   epochs=epochs, extra=("--parallel", "2"))

    def both_saved():
        found = sorted(path.parent for path in (tmp_path / "runs").glob("*-train-dsr*/last.pt"))
        return found if len(found) == 2 else None
    runs = _await(both_saved, 240, "both trials' last.pt")
    said = _down_until_it_ends(postgres, controller)
    assert all(f"run {run} stopped with its checkpoint" in said for run in runs), said[-2000:]
    assert "run the same command" in said and "Traceback" not in said and "sweep-secret" not in said
    assert [json.loads((run / "status.json").read_text())["state"] for run in runs] == ["stopped", "stopped"]

    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    shown = _show(tiny, postgres_url, capsys)
    complete = [t for t in shown["trials"] if t["state"] == "complete"]
    assert sorted(t["run_dir"] for t in complete) == [str(run) for run in runs]     # resumed, not new runs
    assert all(t["label"].startswith("retry of #") for t in complete)
    assert all(_epochs_once_to(run, epochs) for run in runs)
