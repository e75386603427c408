"""Sweeps (issue 22, first part): an Optuna study over preset keys whose trials are ordinary runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import presets
from engine.jobs.options import SweepOptions
from engine.runs.run_dir import RunDir
from engine.runs.status import StatusWriter
from engine.sweep.space import SpaceError, load_space
from engine.sweep.study import load_study, open_study
from workbench.cli.main import main
from tiny import tiny_dsr_data, tiny_dsr_preset

SPACE = """[params]
"dsr.learning_rate" = { low = 5e-4, high = 3e-3, log = true }
"dsr.base_channels" = { choices = [8, 16] }
"""


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tiny_dsr_data(tmp_path_factory.mktemp("sweep") / "data", identities=8, per_identity=4)


@pytest.fixture
def tiny(tmp_path):
    """cpu-demo scaled to a run of a few seconds: 2 epochs, recogniser losses off."""
    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.epochs": 2, "dsr.warmup_epochs": 0})
    return presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")


def _show(tmp_path, tiny, capsys, study: str = "tiny-sweep") -> dict:
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "show", study, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_sweep_runs_trials_as_runs_saves_the_best_preset_and_resumes(tiny, tiny_root, tmp_path, capsys):
    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--sampler", "random", "--seed", "3", "--no-prune"]
    assert main(argv + ["--trials", "2"]) == 0, capsys.readouterr().err
    shown = _show(tmp_path, tiny, capsys)
    assert [t["state"] for t in shown["trials"]] == ["complete", "complete"]
    for trial in shown["trials"]:
        run = Path(trial["run_dir"])
        record = json.loads((run / "sweep.json").read_text())       # the run names its study and trial
        assert (record["study"], record["trial"]) == ("tiny-sweep", trial["number"])
        values = presets.load(run / "preset.toml").values()          # the trial's preset is the run's own
        assert values["dsr.base_channels"] == trial["params"]["dsr.base_channels"]
        assert values["dsr.learning_rate"] == pytest.approx(trial["params"]["dsr.learning_rate"])
        best_psnr = max(r["psnr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                        if r.get("split") == "val")
        assert trial["value"] == pytest.approx(best_psnr)             # the objective: the best epoch's val.psnr
    best = max(shown["trials"], key=lambda t: t["value"])
    saved = presets.load("tiny-best-tiny-sweep")
    assert saved.values()["dsr.base_channels"] == best["params"]["dsr.base_channels"]
    # the same command with a larger budget resumes the study: the two trials are kept, one more runs
    assert main(argv + ["--trials", "3"]) == 0
    assert [t["number"] for t in _show(tmp_path, tiny, capsys)["trials"]] == [0, 1, 2]


def test_a_trial_left_running_by_a_dead_process_fails_and_its_values_run_again(tiny, tiny_root, tmp_path,
                                                                                 capsys):
    (tmp_path / "space.toml").write_text(SPACE)
    preset = presets.load(tiny)
    opts = SweepOptions(space=str(tmp_path / "space.toml"), trials=1, sampler="random", seed=0, prune=False)
    study = open_study(preset, opts, load_space(opts.space, preset), "tiny-sweep")
    orphan = study.ask()                                 # a worker asked, started its run, then died
    params = load_space(opts.space, preset).suggest(orphan)
    dead_run = RunDir.create(preset.runtime.runs_dir, preset, "train-dsr").path
    orphan.set_user_attr("run_dir", str(dead_run))
    StatusWriter(dead_run, "train-dsr").end("failed", "killed")         # its job had started, then died
    assert _show(tmp_path, tiny, capsys)["trials"][0]["state"] == "dead"  # as `runs` would say (issue 36)
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "1", "--sampler", "random", "--no-prune"]) == 0
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert trials[0]["state"] == "fail" and trials[1]["state"] == "complete"
    assert trials[1]["params"]["dsr.base_channels"] == params["dsr.base_channels"]
    assert trials[1]["params"]["dsr.learning_rate"] == pytest.approx(params["dsr.learning_rate"])
    assert load_study(preset, opts).trials[1].user_attrs["retry_of"] == 0
    assert trials[1]["label"] == "retry of #0"                          # not "sampler" (issue 36)


@pytest.mark.parametrize("text, message", [
    ('[params]\n"dsr.learning_rat" = { low = 1e-4, high = 1e-3 }\n', "Did you mean 'dsr.learning_rate'"),
    ('[params]\n"dsr.learning_rate" = { low = 1e-3, high = 1e-4 }\n', "low < high"),
    ('[params]\n"dsr.base_channels" = { low = 0, high = 8 }\n', "not a valid value"),
    ('[params]\n"runtime.device" = { low = 0, high = 1 }\n', "choices"),
    ('# nothing\n', "no [params] table"),
    ('[other]\n', "unknown table(s) other"),
    ('[[trials]]\n"dsr.epoch" = 3\n', "Did you mean 'dsr.epochs'"),
    ('[[trials]]\n"dsr.epochs" = -1\n', "not a valid value"),
    ('[[trials]]\nlabel = "a"\n[[trials]]\nlabel = "a"\n"dsr.epochs" = 3\n', "labels name trials once"),
    ('[params]\n"dsr.base_channels" = { choices = [16] }\n[[trials]]\nlabel = "base"\n',
     "not one of its [params] choices [16]"),
])
def test_a_bad_search_space_is_one_message_and_exit_2_before_anything_runs(tiny, tmp_path, capsys, text,
                                                                            message):
    (tmp_path / "space.toml").write_text(text)
    code = main(["sweep", "--preset", str(tiny), "--space", str(tmp_path / "space.toml"), "--trials", "1"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any(p.name.endswith("train-dsr")
                                                      for p in (tmp_path / "runs").iterdir())


LISTED = """[[trials]]
label = "base"

[[trials]]
label = "3 epochs"
"dsr.epochs" = 3

[[trials]]
label = "wider, slower"
"dsr.base_channels" = 16
"dsr.learning_rate" = 1e-3
"""


def test_listed_trials_run_once_each_as_their_label_says(tiny, tiny_root, tmp_path, capsys):
    """A space of [[trials]] alone: each listed trial runs once (the budget is exactly them), its run's preset is
    the base changed by exactly the listed keys, running the study again queues none of them twice, and a trial
    added to the file later runs on the next call whatever --trials says (the lever study grows one row)."""
    (tmp_path / "space.toml").write_text(LISTED)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--no-prune", "--trials", "5"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "runs the 3 queued trial(s) not run before" in " ".join(capsys.readouterr().out.split())
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert [(t["label"], t["state"]) for t in trials] == [("base", "complete"), ("3 epochs", "complete"),
                                                          ("wider, slower", "complete")]
    base = presets.load(tiny).values()
    expected = [{}, {"dsr.epochs": 3}, {"dsr.base_channels": 16, "dsr.learning_rate": 1e-3}]
    for trial, changed in zip(trials, expected):
        values = presets.load(Path(trial["run_dir"]) / "preset.toml").values()
        assert {k: v for k, v in values.items() if base[k] != v} == changed
    assert main(argv) == 0
    assert len(_show(tmp_path, tiny, capsys)["trials"]) == 3
    (tmp_path / "space.toml").write_text(LISTED + '\n[[trials]]\nlabel = "added later"\n"dsr.epochs" = 1\n')
    assert main(argv[:-2] + ["--trials", "2"]) == 0
    assert "runs the 1 queued trial(s) not run before" in " ".join(capsys.readouterr().out.split())
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert [(t["label"], t["state"]) for t in trials][3:] == [("added later", "complete")]


def test_a_listed_trial_added_to_a_grid_study_runs_and_takes_no_grid_point(tiny, tiny_root, tmp_path, capsys):
    """A grid of 3 points run with --trials 2, then a [[trials]] added and the same command run again: the
    listed trial runs (the budget is raised to hold it) although one grid point is left, and Optuna's grid
    bookkeeping for a trial with no grid point does not stop the sweep; a third call runs the last point."""
    grid = '[params]\n"dsr.lambda_tv" = { choices = [0.0, 1e-6, 2e-6] }\n'
    (tmp_path / "space.toml").write_text(grid)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--sampler", "grid", "--no-prune", "--trials"]
    assert main(argv + ["2"]) == 0, capsys.readouterr().err
    (tmp_path / "space.toml").write_text(grid + '\n[[trials]]\nlabel = "one epoch"\n"dsr.epochs" = 1\n')
    assert main(argv + ["2"]) == 0, capsys.readouterr().err
    assert "raised to 3" in " ".join(capsys.readouterr().out.split())
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert [(t["label"], t["state"]) for t in trials][2] == ("one epoch", "complete")
    assert main(argv + ["10"]) == 0, capsys.readouterr().err
    assert "capped to 4" in " ".join(capsys.readouterr().out.split())
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert sorted(t["params"]["dsr.lambda_tv"] for t in trials if t["label"] != "one epoch") == [0.0, 1e-6, 2e-6]
    assert all(t["state"] == "complete" for t in trials) and len(trials) == 4


def test_a_grid_needs_a_step_or_choices_for_every_key(tiny, tmp_path):
    (tmp_path / "space.toml").write_text('[params]\n"dsr.learning_rate" = { low = 1e-4, high = 1e-3 }\n')
    space = load_space(tmp_path / "space.toml", presets.load(tiny))
    with pytest.raises(SpaceError, match="step"):
        space.grid()


def test_a_pruned_trial_stops_through_its_stop_flag_keeps_its_run_and_is_listed_with_its_epoch(
        tiny, tiny_root, tmp_path, capsys, monkeypatch):
    """The pruner's verdict stops the trial's job like a user's stop: a resumable last.pt, state pruned."""
    import optuna

    from engine.runs.status import run_state

    # a pruner that judges every trial hopeless at its first reported epoch (the median pruner needs history)
    monkeypatch.setattr(optuna.pruners, "MedianPruner",
                        lambda **kw: optuna.pruners.ThresholdPruner(lower=1e9, n_warmup_steps=0))
    (tmp_path / "space.toml").write_text(SPACE)
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "1", "--sampler", "random"]) == 0
    (trial,) = _show(tmp_path, tiny, capsys)["trials"]
    assert trial["state"] == "pruned" and trial["pruned_at_epoch"] == 1
    run = Path(trial["run_dir"])
    assert run_state(run) == "stopped" and (run / "last.pt").is_file()


def test_from_run_tries_the_runs_preset_and_each_of_its_tips_first(tiny, tiny_root, tmp_path, capsys):
    """--from-run: the run's own preset and every tip the guide's rules give for it are the first trials,
    labelled, each once (a resume does not queue them again)."""
    from engine.tips import tips_for_run
    from run_factory import dsr_metrics, write_run

    preset = presets.load(tiny)
    metrics = dsr_metrics([20.0, 21.0, 21.5, 21.4])
    metrics[-2]["loss"] = None                                   # a non-finite train loss: the instability tip
    run = write_run(tmp_path / "earlier", "20260101-100000-tiny-train-dsr", preset, "train-dsr", metrics=metrics,
                    status={"state": "finished"})
    tips = tips_for_run(run)[1]
    assert tips, "the fabricated run must call for at least one tip"
    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--from-run", str(run), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--sampler", "random", "--no-prune", "--trials", str(1 + len(tips))]
    assert main(argv) == 0, capsys.readouterr().err
    trials = _show(tmp_path, tiny, capsys, study="tiny-sweep")["trials"]
    assert [t["label"] for t in trials] == [f"base: {run.name}"] + [f"tip: {tip.title} ({run.name})" for tip in tips]
    for trial, tip in zip(trials[1:], tips):                    # each tip's values are in its trial's preset
        values = presets.load(Path(trial["run_dir"]) / "preset.toml").values()
        assert all(values[key] == pytest.approx(value) for key, value in tip.patch.items())
    assert trials[0]["params"]["dsr.learning_rate"] == pytest.approx(preset.dsr.learning_rate)
    assert main(argv[:-1] + [str(2 + len(tips))]) == 0           # resumed: the seeds are not queued twice
    labels = [t["label"] for t in _show(tmp_path, tiny, capsys, study="tiny-sweep")["trials"]]
    assert len(labels) == 2 + len(tips) and labels.count(f"base: {run.name}") == 1


def test_six_trials_two_at_once_as_cli_processes_with_the_cores_divided_each_preset_its_values(
        tiny, tiny_root, tmp_path, capsys):
    """--parallel 2 on 2 cores: two trial processes at once (their runs overlap in time), one thread each; the
    study holds 6 finished trials, each run's preset differs from the base in exactly the trial's values."""
    (tmp_path / "space.toml").write_text(SPACE)
    longer = presets.save(presets.load(tiny).with_changes({"dsr.epochs": 30}), tiny, overwrite=True)  # seconds
    assert main(["sweep", "--preset", str(longer), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "6", "--parallel", "2", "--sampler", "random", "--no-prune"]) == 0, \
        capsys.readouterr().err
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert len(trials) == 6 and {t["state"] for t in trials} <= {"complete", "pruned"}
    base, threads = presets.load(longer), max(1, (os.cpu_count() or 1) // 2)
    spans = []
    for trial in trials:
        run = Path(trial["run_dir"])
        assert (run / "detached.log").is_file()                        # a CLI process of its own
        ran = presets.load(run / "preset.toml")
        assert ran.runtime.num_threads == threads
        changed = {key for key, _a, _b in presets.diff(base, ran) if key in base.values()}
        assert changed - {"runtime.num_threads"} <= set(trial["params"])
        for key, value in trial["params"].items():
            assert ran.values()[key] == pytest.approx(value)
        times = [json.loads(line)["time"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        status = json.loads((run / "status.json").read_text())
        spans.append((status["started"], max(times)))
    (a_start, a_end), (b_start, b_end) = spans[:2]
    assert a_start < b_end and b_start < a_end                           # they ran at the same time


def test_a_diverging_trial_fails_and_the_sweep_completes(tiny, tiny_root, tmp_path, capsys, monkeypatch):
    """A trial whose loss turns non-finite (here: lambda_tv = 7, patched to give NaN, standing in for a learning
    rate that diverges) stops through the trainers' non-finite guard: a failed trial, not a failed sweep."""
    import engine.losses.combined as combined

    forward = combined.DSRCriterion.forward

    def diverging(self, sr, hr):
        total, terms = forward(self, sr, hr)
        return (total * float("nan"), terms) if self.weights.tv == 7.0 else (total, terms)
    monkeypatch.setattr(combined.DSRCriterion, "forward", diverging)
    (tmp_path / "space.toml").write_text('[params]\n"dsr.lambda_tv" = { choices = [0.0, 7.0] }\n')
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "5", "--sampler", "grid", "--no-prune"]) == 0, capsys.readouterr().err
    trials = {t["params"]["dsr.lambda_tv"]: t for t in _show(tmp_path, tiny, capsys)["trials"]}
    assert len(trials) == 2                                             # the grid's two points (--trials capped)
    assert trials[0.0]["state"] == "complete"
    assert trials[7.0]["state"] == "fail" and "non-finite" in trials[7.0]["error"]

def test_the_wall_time_budget_starts_no_trial_once_spent(tiny, tiny_root, tmp_path, capsys):
    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--trials", "5", "--sampler", "random", "--no-prune"]
    assert main(argv + ["--timeout", "1e-9"]) == 0                      # spent before the first trial
    assert main(["sweep", "--preset", str(tiny), "show", "tiny-sweep", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["trials"] == []
    assert main(argv + ["--trials", "1", "--timeout", "600"]) == 0     # a budget with time left runs trials
    assert [t["state"] for t in _show(tmp_path, tiny, capsys)["trials"]] == ["complete"]


def test_a_second_objective_keeps_the_pareto_front(tiny, tiny_root, tmp_path, capsys):
    """--objective2: both values per trial; the front is marked; no pruning (Optuna prunes one objective only)."""
    (tmp_path / "space.toml").write_text(SPACE)
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "3", "--sampler", "random", "--objective2", "summary.parameters"]) == 0
    shown = _show(tmp_path, tiny, capsys)
    assert shown["directions"] == ["maximize", "minimize"]
    rows = shown["trials"]
    for row in rows:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        assert row["value"][1] == summary["parameters"] and row["state"] == "complete"
    front = [r for r in rows if r["best"]]
    dominated = [r for r in rows if not r["best"]]
    assert front and all(any(f["value"][0] >= d["value"][0] and f["value"][1] <= d["value"][1] for f in front)
                         for d in dominated)


def test_a_trial_whose_process_died_after_a_checkpoint_resumes_its_run(tiny, tiny_root, tmp_path, capsys):
    """The dead trial's run holds last.pt: the retry continues that run (same directory, the epochs after the
    checkpoint), instead of starting its values from scratch."""
    from engine.events import Metrics
    from engine.jobs.registry import JobRequest, StopFlag, run_job
    from engine.runs.status import run_state

    (tmp_path / "space.toml").write_text(SPACE)
    preset = presets.load(tiny).with_changes({"dsr.epochs": 4})
    opts = SweepOptions(space=str(tmp_path / "space.toml"), trials=1, sampler="random", seed=0, prune=False)
    space = load_space(opts.space, preset)
    study = open_study(preset, opts, space, "tiny-sweep")
    orphan = study.ask()
    trial_preset = preset.with_changes(space.suggest(orphan))
    run = RunDir.create(trial_preset.runtime.runs_dir, trial_preset, "train-dsr").path
    orphan.set_user_attr("run_dir", str(run))
    stop = StopFlag()
    run_job(JobRequest("train-dsr", trial_preset, data=str(tiny_root), options={"run_dir": str(run)}),
            lambda e: stop.set() if isinstance(e, Metrics) and e.split == "val" and e.epoch == 2 else None, stop)
    assert run_state(run) == "stopped" and (run / "last.pt").is_file()     # then the sweep's process died
    assert main(["sweep", "--preset", str(presets.save(preset, tmp_path / "four.toml")), "--data", str(tiny_root),
                 "--space", str(tmp_path / "space.toml"), "--trials", "1", "--study", "tiny-sweep", "--no-prune"]) == 0
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert [t["state"] for t in trials] == ["fail", "complete"] and trials[1]["run_dir"] == str(run)
    epochs = [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r.get("split") == "val"]
    assert epochs == [1, 2, 3, 4]                                           # continued, not started again
    assert json.loads((run / "sweep.json").read_text())["trial"] == 1


def test_two_controllers_on_one_storage_share_the_study_and_the_budget(tiny, tiny_root, tmp_path, capsys):
    """Two `sweep` processes on one journal (two machines would share an RDB the same way): every trial runs
    once, in its own run directory, and the study ends with exactly the budget."""
    import subprocess
    import sys

    (tmp_path / "space.toml").write_text(SPACE)
    argv = [sys.executable, "-m", "workbench.cli.main", "sweep", "--preset", str(tiny), "--data", str(tiny_root),
            "--space", str(tmp_path / "space.toml"), "--trials", "4", "--sampler", "random", "--no-prune"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(argv + ["--seed", str(seed)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0], [w.stderr.read()[-2000:] for w in workers]
    trials = _show(tmp_path, tiny, capsys)["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 4
    runs = [t["run_dir"] for t in trials]
    assert len(set(runs)) == 4
    assert sorted(json.loads((Path(r) / "sweep.json").read_text())["trial"] for r in runs) == \
        [t["number"] for t in trials]


def test_save_best_writes_the_best_trials_preset_and_prints_its_diff(tiny, tiny_root, tmp_path, capsys):
    (tmp_path / "space.toml").write_text(SPACE)
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "3", "--sampler", "random", "--no-prune"]) == 0
    shown = _show(tmp_path, tiny, capsys)
    best = max(shown["trials"], key=lambda t: t["value"])
    assert set(shown["importances"]) <= {"dsr.learning_rate", "dsr.base_channels"}
    assert main(["sweep", "--preset", str(tiny), "save-best", "tiny-sweep", "my-best"]) == 0
    out = capsys.readouterr().out
    saved = presets.load("my-best")
    assert f"saved trial {best['number']}" in out and "dsr.learning_rate" in out
    changed = {key for key, _, _ in presets.diff(presets.load(tiny), saved)}
    assert changed <= {"dsr.learning_rate", "dsr.base_channels"} and changed   # exactly the trial's values
    assert saved.dsr.learning_rate == pytest.approx(best["params"]["dsr.learning_rate"])
    assert main(["sweep", "--preset", str(tiny), "save-best", "tiny-sweep", "other", "--trial", "99"]) == 2
    assert "no complete trial 99" in capsys.readouterr().err


def test_sweep_stop_ends_a_controller_started_in_its_own_process_and_its_trial_keeps_a_checkpoint(
        tiny, tiny_root, tmp_path, capsys):
    from engine.jobs.options import SweepOptions
    from engine.sweep.launch import start_sweep
    from engine.sweep.listing import controller_state
    from waiting import wait_until

    (tmp_path / "space.toml").write_text(SPACE)
    long_run = presets.load(tiny).with_changes({"dsr.epochs": 200, "runtime.num_threads": 1})
    job = start_sweep(long_run, str(tiny_root), SweepOptions(space=str(tmp_path / "space.toml"), trials=3,
                                                              sampler="random", prune=False))
    control = tmp_path / "runs" / "sweeps" / "tiny-sweep"
    assert main(["sweep", "--preset", str(tiny), "stop", "tiny-sweep"]) in (0, 2)   # maybe not running yet
    wait_until(lambda: controller_state(control) == "running" and any((tmp_path / "runs").glob("*/last.pt")),
               timeout=120, what="a running trial with a checkpoint")
    assert main(["sweep", "--preset", str(tiny), "stop", "tiny-sweep"]) == 0
    assert job.proc.wait(timeout=60) == 130                            # stopped, as after Ctrl-C
    assert controller_state(control) == "stopped"
    trial = _show(tmp_path, tiny, capsys)["trials"][0]
    assert trial["state"] == "stopped" and (Path(trial["run_dir"]) / "last.pt").is_file()
    assert main(["sweep", "--preset", str(tiny), "stop", "tiny-sweep"]) == 2
    assert "nothing to stop" in capsys.readouterr().err


def test_a_study_started_with_a_preset_file_is_found_by_its_name_alone_and_diffed_from_its_base(
        tiny, tiny_root, tmp_path, capsys, monkeypatch):
    """`sweep show/save-best STUDY` and `report STUDY` needed `--preset P` again for a study whose base preset's
    runs_dir is not the default; save-best printed its diff from cpu-demo instead of the study's base."""
    (tmp_path / "space.toml").write_text(SPACE)
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "1", "--sampler", "random", "--no-prune"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)                                 # cpu-demo's runs_dir "runs" is elsewhere/runs
    capsys.readouterr()
    assert main(["sweep", "show", "tiny-sweep", "--json"]) == 0
    [trial] = json.loads(capsys.readouterr().out)["trials"]
    assert trial["state"] == "complete" and Path(trial["run_dir"]).parent == tmp_path / "runs"
    assert main(["sweep", "save-best", "tiny-sweep", "my-best"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "differs from tiny in:" in out and "runtime.runs_dir" not in out and "data.vlr_width" not in out
    changed = {key for key, _, _ in presets.diff(presets.load(tiny), presets.load("my-best"))}
    assert changed and all(f" {key}: " in out for key in changed)
    assert main(["report", "tiny-sweep"]) == 0
    report = tmp_path / "runs" / "sweeps" / "tiny-sweep-report.md"
    assert report.is_file() and "`tiny`" in report.read_text()
    assert not (elsewhere / "runs").exists()


def _study_without_index(preset, name: str, run: Path, value: float):
    """Study ``name`` in ``preset``'s runs_dir written directly (no `sweep`, so no index entry): one trial."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from engine.sweep.study import storage_for

    study = optuna.create_study(study_name=name, storage=storage_for(preset, SweepOptions(), name),
                                direction="maximize")
    study.set_user_attr("setup", {"objective": "val.psnr", "objective2": None, "job": "train-dsr",
                                  "base_preset": preset.name, "baselines": False, "folds": None})
    run.mkdir(parents=True)
    presets.save(presets.derive(preset.with_changes({"dsr.learning_rate": 5e-4}), preset.name), run / "preset.toml")
    study.add_trial(create_trial(params={"dsr.learning_rate": 5e-4}, value=value, user_attrs={"run_dir": str(run)},
                                 distributions={"dsr.learning_rate": FloatDistribution(1e-4, 1e-3, log=True)}))


def test_a_study_is_looked_for_in_every_known_presets_runs_dir_and_an_unknown_one_names_each_place(
        tmp_path, capsys, monkeypatch):
    from engine.sweep.places import index_path

    monkeypatch.chdir(tmp_path)
    far = presets.derive(presets.load("cpu-demo").with_changes({"runtime.runs_dir": str(tmp_path / "far-runs")}),
                         "far")
    presets.save(far, "far")
    _study_without_index(far, "far-study", tmp_path / "far-runs" / "trial-0", 20.0)
    assert not index_path().exists()
    assert main(["sweep", "show", "far-study", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"][0]["run_dir"] == str(tmp_path / "far-runs" / "trial-0")
    assert main(["sweep", "save-best", "far-study", "far-best"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "differs from far in:" in out and "dsr.learning_rate" in out and "runtime.runs_dir" not in out
    for argv in (["sweep", "show", "no-such-study"], ["sweep", "save-best", "no-such-study", "x"],
                 ["report", "no-such-study"], ["sweep", "stop", "no-such-study"]):
        assert main(argv) == 2, argv
        err = "".join(capsys.readouterr().err.split())
        assert "nostudy'no-such-study'found:lookedin" in err and "Traceback" not in err, argv
        for place in (index_path(), tmp_path / "far-runs" / "sweeps", tmp_path / "runs" / "sweeps"):
            assert "".join(str(place).split()) in err, (argv, place)
        assert "(runs_dirofcpu-camera,cpu-demo," in err and "(runs_diroffar,far-best)" in err, argv   # presets in name order
