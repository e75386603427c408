"""Issue 36, defects found with several controllers on one study (on the journal)."""

from __future__ import annotations

import warnings


from engine import presets
from workbench.cli.main import main
from tiny import tiny_dsr_preset

SPACE = """[params]
"dsr.learning_rate" = { low = 5e-4, high = 3e-3, log = true }
"""


def test_joining_a_study_from_another_base_preset_is_refused_naming_both(tiny, tiny_root, tmp_path, capsys):
    (tmp_path / "space.toml").write_text(SPACE)
    common = ["--data", str(tiny_root), "--space", str(tmp_path / "space.toml"), "--trials", "1", "--no-prune",
              "--study", "shared"]
    assert main(["sweep", "--preset", str(tiny), *common]) == 0
    other = presets.save(presets.derive(presets.load(tiny), "other"), tmp_path / "other.toml")
    capsys.readouterr()
    assert main(["sweep", "--preset", str(other), *common, "--trials", "2"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "started from preset 'tiny', not 'other'" in error and "--study NAME" in error


def test_show_says_stopped_not_fail_names_the_pruning_rule_and_warns_nothing_below_two_trials(tmp_path, capsys):
    import optuna

    from engine.jobs.options import SweepOptions
    from engine.sweep.study import importances, pruning_rule, shown_state, trial_rows

    study = optuna.create_study()
    stopped = study.ask()
    stopped.set_user_attr("stopped", True)
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert [shown_state(t) for t in study.trials] == ["stopped", "fail"]
    assert [row["state"] for row in trial_rows(study)] == ["stopped", "fail"]
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(done, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # Optuna's warning (with its file path) would raise here
        assert importances(study) == {}
    rule = pruning_rule(SweepOptions(objective="val.psnr"))
    assert "once 5 trials completed" in rule and "from epoch 3" in rule
    assert pruning_rule(SweepOptions(objective="val.psnr", prune=False)) == "no pruning"


def test_a_second_controller_draws_new_points_and_the_first_stays_reproducible(tiny, tiny_root, tmp_path, capsys):
    """A controller joining or resuming a study used to replay the first one's points (the sampler seeded with
    runtime.seed): its first trial equalled trial 0. Each controller now has its rank's seed, recorded."""
    from engine.jobs.options import SweepOptions
    from engine.sweep import controllers
    from engine.sweep.study import load_study

    (tmp_path / "space.toml").write_text(SPACE)
    argv = ["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
            "--sampler", "random", "--no-prune"]
    assert main([*argv, "--trials", "1"]) == 0
    assert main([*argv, "--trials", "2"]) == 0                   # the same command again: a second controller
    study = load_study(presets.load(tiny), SweepOptions())
    rates = [t.params["dsr.learning_rate"] for t in study.trials]
    assert len(rates) == 2 and rates[0] != rates[1]
    seeds = [c["seed"] for c in controllers.registered(study)]
    assert seeds == [42, 42 + controllers.SEED_STRIDE] and presets.load(tiny).runtime.seed == 42
    first_alone = tmp_path / "again"
    again = presets.save(presets.derive(presets.load(tiny), "tiny").with_changes(
        {"runtime.runs_dir": str(first_alone)}), tmp_path / "again.toml")
    assert main(["sweep", "--preset", str(again), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--sampler", "random", "--no-prune", "--trials", "1", "--study", "tiny-sweep"]) == 0
    alone = load_study(presets.load(again), SweepOptions(study="tiny-sweep"))
    assert alone.trials[0].params["dsr.learning_rate"] == rates[0]     # one controller alone: reproducible


def test_show_at_80_columns_cuts_no_parameter_and_names_each_key(tmp_path, capsys, monkeypatch):
    """At 80 columns the params column read `dsr.learning_ra...`: one column per parameter under its short name
    (whole keys where two share one), a legend naming the keys, the runs by name, nothing ends in an ellipsis."""
    import optuna

    from engine.sweep.places import journal_path
    from engine.sweep.storage import open_storage

    runs = tmp_path / "runs"
    tiny = presets.save(presets.derive(tiny_dsr_preset(runs), "tiny"), tmp_path / "tiny.toml")
    study = optuna.create_study(study_name="wide", storage=open_storage(None, journal_path(runs, "wide")))
    space = {"dsr.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             "dsr.weight_decay": optuna.distributions.FloatDistribution(0, 1e-3),
             "finetune.weight_decay": optuna.distributions.FloatDistribution(0, 1e-3),
             "dsr.base_channels": optuna.distributions.CategoricalDistribution([16, 32, 64])}
    for number in range(3):
        trial = study.ask(space)
        trial.set_user_attr("run_dir", str(runs / f"20261207-08000{number}-tiny-train-dsr"))
        study.tell(trial, 24.0 + number)
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "show", "wide"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out and "..." not in out
    assert "learning_rate = dsr.learning_rate" in out and "base_channels = dsr.base_channels" in out
    flat = "".join(out.split())
    assert f"runsin{runs}" in flat                                            # the folder once, the runs by name
    assert all(f"run20261207-08000{n}-tiny-train-dsr" in flat for n in range(3))
    assert "dsr.weight_decay" in flat and "finetune.weight_decay" in flat        # a shared short name: whole keys
    for trial in study.trials:
        assert f"{trial.params['dsr.learning_rate']:.4g}" in out                  # each value whole in its cell
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["sweep", "--preset", str(tiny), "show", "wide"]) == 0
    wide = capsys.readouterr().out
    assert "┃ learning_rate" in wide.replace("┃  ", "┃ ") or "learning_rate ┃" in wide   # a table when it fits
    assert "#0 complete" not in wide


def test_parallel_trials_of_a_preset_without_weights_share_one_recogniser_made_once(tiny_root, tmp_path, capsys):
    """Two trials started together each pre-trained their own recogniser (`-pretrain`, `-pretrain-2`), so their
    identity losses differed: the study makes one before the first trial, records it, and pins every trial to it."""
    from engine.sweep.study import load_study
    from engine.jobs.options import SweepOptions

    runs = tmp_path / "runs"
    preset = tiny_dsr_preset(runs, **{"dsr.epochs": 1, "dsr.warmup_epochs": 0, "dsr.lambda_identity": 0.5,
                                      "finetune.pretrain_epochs": 1, "runtime.edgeface_weights": ""})
    tiny = presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
    (tmp_path / "space.toml").write_text(SPACE)
    capsys.readouterr()
    assert main(["sweep", "--preset", str(tiny), "--data", str(tiny_root), "--space", str(tmp_path / "space.toml"),
                 "--trials", "2", "--parallel", "2", "--sampler", "random", "--no-prune"]) == 0, \
        capsys.readouterr().err[-3000:]
    pretrained = sorted(runs.glob("*-pretrain*"))
    assert len(pretrained) == 1, pretrained
    recogniser = str((pretrained[0] / "best.pt").resolve())
    trials = sorted(runs.glob("*-train-dsr*"))
    assert len(trials) == 2
    for trial in trials:
        assert presets.load(trial / "preset.toml").runtime.edgeface_weights == recogniser
    study = load_study(presets.load(tiny), SweepOptions(study="tiny-sweep"))
    assert study.user_attrs["recogniser"] == recogniser


def test_a_finished_run_is_recorded_by_another_controller_only_once_its_own_is_gone(tmp_path):
    """Three controllers on one study: one recorded the result of a trial whose live controller was about to
    tell it ('Cannot tell a COMPLETE trial'). A finished run's result is recorded only when its controller is
    gone; then it is recorded once, from the run."""
    import json
    import os

    import optuna

    from engine.events import ignore
    from engine.jobs.options import SweepOptions
    from engine.runs.status import StatusWriter
    from engine.sweep.study import _fail_dead_trials

    study = optuna.create_study(direction="maximize")
    run = tmp_path / "run"
    run.mkdir()
    StatusWriter(run, "train-dsr").end("finished")
    (run / "metrics.jsonl").write_text(json.dumps({"split": "val", "epoch": 1, "psnr": 21.5}) + "\n")
    trial = study.ask()
    trial.set_user_attr("run_dir", str(run))
    trial.set_user_attr("controller", {"host": __import__("socket").gethostname(), "pid": os.getpid()})
    opts = SweepOptions(objective="val.psnr")
    _fail_dead_trials(study, opts, ignore)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING          # its (live) controller tells it
    trial.set_user_attr("controller", {"host": __import__("socket").gethostname(), "pid": 2 ** 22 + 17})
    _fail_dead_trials(study, opts, ignore)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE and study.trials[0].value == 21.5
    assert len(study.trials) == 1                                             # recorded, not run again
