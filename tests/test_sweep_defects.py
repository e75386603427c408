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
