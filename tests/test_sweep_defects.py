"""Issue 36, defects found with several controllers on one study (on the journal)."""

from __future__ import annotations

import warnings

import pytest

from engine import presets
from workbench.cli.main import main
from tiny import tiny_dsr_data, tiny_dsr_preset

SPACE = """[params]
"dsr.learning_rate" = { low = 5e-4, high = 3e-3, log = true }
"""


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tiny_dsr_data(tmp_path_factory.mktemp("sweep-defects") / "data", identities=8, per_identity=4)


@pytest.fixture
def tiny(tmp_path):
    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.epochs": 1, "dsr.warmup_epochs": 0})
    return presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")


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
