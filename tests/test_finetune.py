"""Fine-tuning and pre-training of EdgeFace: stages, learning, checkpoints, recogniser lookup, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
import torch

from engine.io import atomic
from engine.data import PairedSplit, load_split
from engine.errors import JobStopped, WeightsError, WorkbenchError
from engine.events import Failed, Finished, Log, Metrics, Progress
from engine.jobs.registry import JobRequest, StopFlag, run_job
from engine.models.dsr import DSRNet
from engine.models.edgeface import build_edgeface, edgeface_checkpoint, load_edgeface
from engine.presets import store
from engine.runs.status import StatusWriter
from engine.runs.run_dir import RunDir
from engine.runs.records import read_metrics
from engine.jobs.recogniser import existing_recogniser, recogniser_weights
from engine.train.recognition import closed_set, histogram_entropy
from engine.data.augment import FinetuneAugment
from workbench.cli.main import main


@pytest.fixture
def preset(tmp_path, demo_root):
    """cpu-demo on the tiny demo set; hue jitter off (torchvision's HSV round trip is slow on CPU)."""
    return store.load("cpu-demo").with_changes({
        "data.root": str(demo_root), "runtime.runs_dir": str(tmp_path / "runs"), "runtime.device": "cpu",
        "finetune.jitter_hue": 0.0, "finetune.batch_size": 16})


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    """3 training identities x 2 images (+1 val image each): for the tests of mechanics, not of learning."""
    from engine.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("mini") / "data", identities=4, per_identity=3, seed=0,
                                 vlr_size=(16, 16), hr_size=128)


@pytest.fixture
def mini(preset, mini_root):
    return preset.with_changes({"data.root": str(mini_root), "finetune.batch_size": 4})


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory) -> Path:
    """A randomly initialised edgeface_xxs saved as a project checkpoint (the tests' 'pretrained' file)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "xxs_init.pt"
    return atomic.torch_save(path, edgeface_checkpoint(build_edgeface("edgeface_xxs")))


def _run(preset, options, events=None, stop=None):
    events = events if events is not None else []
    result = run_job(JobRequest("finetune", preset, options=options), events.append, stop)
    assert isinstance(result, Finished), getattr(result, "error", result)
    return result, events


def _params(state_dict) -> dict[str, torch.Tensor]:
    reference = build_edgeface("edgeface_xxs")
    names = {n for n, _ in reference.named_parameters()}
    return {k: v for k, v in state_dict.items() if k in names}


def test_stage1_leaves_the_backbone_unchanged_and_stage2_changes_every_parameter(mini, start_weights, tmp_path):
    initial = _params(torch.load(start_weights, weights_only=False)["state_dict"])
    result, _ = _run(mini, {"edgeface": str(start_weights), "stage1_epochs": 1, "stage2_epochs": 0,
                              "run_dir": str(tmp_path / "s1")})
    after_stage1 = _params(torch.load(result.run_dir / "last.pt", weights_only=False)["state_dict"])
    assert after_stage1.keys() == initial.keys()
    assert all(torch.equal(after_stage1[k], initial[k]) for k in initial)
    assert result.summary["stage1_best_top1"] is not None and result.summary["stage2_best_top1"] is None

    result, events = _run(mini, {"edgeface": str(start_weights), "stage1_epochs": 0, "stage2_epochs": 1,
                                   "run_dir": str(tmp_path / "s2")})
    after_stage2 = _params(torch.load(result.run_dir / "last.pt", weights_only=False)["state_dict"])
    changed = [k for k in initial if not torch.equal(after_stage2[k], initial[k])]
    # a few scalars (XCA temperatures behind a 1e-6 layer scale) may move by less than float32 resolves
    assert len(changed) >= 0.95 * len(initial)
    assert sum(initial[k].numel() for k in changed) >= 0.99 * sum(v.numel() for v in initial.values())
    assert {k.split(".")[2] for k in changed if k.startswith("model.stages.")} == {"0", "1", "2", "3"}
    assert any(isinstance(e, Log) and "bicubic" in e.message for e in events)
    assert result.summary["input"] == "bicubic"
    assert result.summary["stage2_best_top1"] is not None and result.summary["stage1_best_top1"] is None


def test_tiny_finetune_run_learns_well_above_chance(preset, start_weights):
    result, events = _run(preset, {"edgeface": str(start_weights), "stage1_epochs": 10, "stage2_epochs": 0})
    summary = result.summary
    chance = 1.0 / summary["identities"]
    assert summary["best_val_top1"] >= 3 * chance
    val = [e.values for e in events if isinstance(e, Metrics) and e.split == "val"]
    train = [e.values for e in events if isinstance(e, Metrics) and e.split == "train"]
    assert len(val) == len(train) == 10
    assert max(v["top1"] for v in val) > val[0]["top1"]
    assert train[-1]["loss"] < train[0]["loss"]
    assert all(0.0 <= v["entropy"] <= 1.0 for v in val)
    # the run directory: metrics, summary, checkpoints that load back strictly
    records = read_metrics(result.run_dir)
    assert {(r["stage"], r["split"]) for r in records} == {("stage1", "train"), ("stage1", "val")}
    assert [r["epoch"] for r in records if r["split"] == "val"] == list(range(1, 11))
    on_disk = json.loads((result.run_dir / "summary.json").read_text())
    for key in ("stage1_best_top1", "best_val_top1", "best_epoch", "epochs_run",
                "images_per_second", "parameters"):
        assert on_disk[key] is not None, key
    assert on_disk["epochs_run"] == 10 and on_disk["images_per_second"] > 0
    best = torch.load(result.run_dir / "best.pt", weights_only=False)
    assert best["kind"] == "edgeface" and best["variant"] == "edgeface_xxs"
    assert best["val"]["top1"] == pytest.approx(summary["best_val_top1"])
    assert len(best["classes"]) == summary["identities"] and best["head"]["weight"].shape[0] == summary["identities"]
    assert load_edgeface(result.run_dir / "best.pt").variant == "edgeface_xxs"
    assert "optimizer" in torch.load(result.run_dir / "last.pt", weights_only=False)


def test_cli_finetune_with_a_dsr_checkpoint(mini, start_weights, tmp_path, capsys):
    preset_file = tmp_path / "p.toml"
    preset_file.write_text(tomli_w.dumps(mini.to_mapping()))
    torch.manual_seed(0)
    dsr = DSRNet(mini.vlr_size, mini.data.hr_size, base_channels=8, residual_blocks=1)
    dsr_file = atomic.torch_save(tmp_path / "dsr.pt", {"kind": "dsr", "config": dsr.config,
                                                       "state_dict": dsr.state_dict(), "epoch": 1})
    run_dir = tmp_path / "cli-run"
    code = main(["finetune", "--preset", str(preset_file), "--dsr", str(dsr_file), "--edgeface", str(start_weights),
                 "--stage1-epochs", "1", "--stage2-epochs", "0", "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["input"] == "dsr" and summary["dsr"] == str(dsr_file)
    assert "finetune summary" in out and "stage1" in out
    code = main(["finetune", "--preset", str(preset_file), "--edgeface", str(tmp_path / "missing.pt")])
    assert code == 2
    assert "missing.pt not" in capsys.readouterr().err.replace("\n", " ")


def test_stop_request_saves_last_and_reports_stopped(mini, start_weights, tmp_path):
    stop = StopFlag()
    events: list = []

    def emit(event):
        events.append(event)
        if isinstance(event, Progress) and event.stage == "stage2":
            stop.set()

    result = run_job(JobRequest("finetune", mini, options={"edgeface": str(start_weights), "stage1_epochs": 0,
                                                            "stage2_epochs": 3, "run_dir": str(tmp_path / "r")}),
                     emit, stop)
    assert isinstance(result, Finished) and result.stopped
    assert (tmp_path / "r" / "last.pt").is_file()
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["stopped"] is True


# ----------------------------------------------------------------------------- the recogniser's weights


def _finished_pretrain(preset, weights: Path, data_root: Path) -> RunDir:
    """A finished pretrain run of ``preset`` on ``data_root`` (its summary names the data, as a real one's does)."""
    run = RunDir.create(preset.runtime.runs_dir, preset, "pretrain")
    atomic.torch_save(run.path / "best.pt", torch.load(weights, weights_only=True))
    run.write_summary({"data_root": str(data_root), "epochs": {"pretrain": preset.finetune.pretrain_epochs}})
    StatusWriter(run.path, "pretrain").end("finished")
    return run


def test_recogniser_weights_prefers_the_preset_file_then_a_pretrain_run(preset, start_weights, tmp_path, demo_root):
    stop = StopFlag()
    assert recogniser_weights(preset.with_changes({"runtime.edgeface_weights": str(start_weights)}), demo_root,
                              lambda e: None, stop) == start_weights
    with pytest.raises(WeightsError, match=r"nope\.pt does not exist"):
        recogniser_weights(preset.with_changes({"runtime.edgeface_weights": str(tmp_path / "nope.pt")}), demo_root,
                           lambda e: None, stop)
    no_pretrain = preset.with_changes({"finetune.pretrain_epochs": 0})
    with pytest.raises(WeightsError, match=r"runtime\.edgeface_weights.*finetune\.pretrain_epochs > 0"):
        recogniser_weights(no_pretrain, demo_root, lambda e: None, stop)
    earlier = _finished_pretrain(preset, start_weights, demo_root)
    assert recogniser_weights(no_pretrain, demo_root, lambda e: None, stop) == earlier.path / "best.pt"
    # a newer pretrain run that was stopped (1 of 4 epochs) is never taken as the recogniser
    stopped = RunDir(earlier.path.with_name(earlier.path.name + "-2"))
    stopped.path.mkdir()
    stopped.write_preset(preset)
    atomic.torch_save(stopped.path / "best.pt", torch.load(start_weights, weights_only=True))
    StatusWriter(stopped.path, "pretrain").end("stopped")
    events: list = []
    assert recogniser_weights(no_pretrain, demo_root, events.append, stop) == earlier.path / "best.pt"
    assert any("not reusing unfinished" in e.message and "(stopped)" in e.message for e in events)


def test_recogniser_weights_pretrains_on_hr_when_nothing_exists(mini, mini_root):
    events: list = []
    path = recogniser_weights(mini.with_changes({"finetune.pretrain_epochs": 1}), mini_root, events.append,
                              StopFlag())
    assert path.name == "best.pt" and path.parent.name.endswith("-cpu-demo-pretrain")
    assert load_edgeface(path).variant == "edgeface_xxs"
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["input"] == "hr" and summary["epochs_run"] == 1 and summary["pretrain_best_top1"] is not None
    assert {e.stage for e in events if isinstance(e, Metrics)} == {"pretrain"}


def test_a_recogniser_is_reused_by_its_settings_and_data_not_by_the_presets_name(preset, start_weights, demo_root,
                                                                                  tmp_path):
    """A new preset name pre-trained a recogniser again (40 epochs on cpu-demo) although a finished pre-training
    with its recogniser settings existed."""
    from engine.jobs.recogniser import latest_finished_pretrain

    first = _finished_pretrain(store.derive(preset, "alpha"), start_weights, demo_root)
    runs = preset.runtime.runs_dir
    beta = store.derive(preset.with_changes({"dsr.learning_rate": 5e-4, "finetune.stage2_epochs": 3}), "beta")
    events: list = []
    assert beta.finetune.pretrain_epochs > 0                       # beta would pre-train if nothing fitted
    assert recogniser_weights(beta, demo_root, events.append, StopFlag()) == first.path / "best.pt"
    assert [p.name for p in Path(runs).iterdir()] == [first.path.name]          # no second pre-training run
    assert any("recogniser settings" in e.message and str(first.path) in e.message for e in events)
    # a key that shapes the pre-training, or other data: not reused
    for changes in ({"finetune.pretrain_lr": 1e-3}, {"finetune.arcface_margin": 0.3}, {"runtime.seed": 7},
                    {"runtime.edgeface_variant": "edgeface_s_gamma_05"}, {"finetune.pretrain_epochs": 5}):
        assert latest_finished_pretrain(store.derive(preset.with_changes(changes), "beta"), demo_root).run is None
    assert latest_finished_pretrain(beta, tmp_path / "other-data").run is None
    gamma = store.derive(preset.with_changes({"finetune.pretrain_lr": 1e-3, "finetune.pretrain_epochs": 0}), "gamma")
    with pytest.raises(WeightsError, match="no finished pretrain run with its recogniser settings"):
        recogniser_weights(gamma, demo_root, lambda e: None, StopFlag())
    # the preset's own run made with other settings is named when it is passed over
    events.clear()
    alpha_changed = store.derive(preset.with_changes({"finetune.pretrain_lr": 1e-3}), "alpha")
    assert existing_recogniser(alpha_changed, demo_root, events.append) is None
    assert any(first.path.name in e.message and "finetune.pretrain_lr 0.002" in e.message for e in events)


def test_a_job_given_its_run_dir_names_the_pretraining_it_waits_for_and_passes_its_stop_on(mini, mini_root):
    """The app follows an own-process train-dsr through its directory: while the job pre-trains its recogniser,
    the run's status names the pre-training run (the follower follows it), and x on the run stops it."""
    from engine.runs.follow import RunFollower
    from engine.runs.status import read_status, request_stop, run_state

    host = RunDir.create(mini.runtime.runs_dir, mini, "train-dsr").path
    seen: list = []

    def emit(event):
        if isinstance(event, Progress) and event.stage == "pretrain" and not seen:
            status = read_status(host)
            seen.append((status["stage"], status["stage_run"], RunFollower(host)._current_dir()))
            request_stop(host)                               # what x writes for a followed run
    with pytest.raises(JobStopped):
        recogniser_weights(mini.with_changes({"finetune.pretrain_epochs": 500}), mini_root, emit, StopFlag(),
                           host=(host, "train-dsr"))
    stage, stage_run, followed = seen[0]
    assert stage == "pretrain" and Path(stage_run).name.endswith("-cpu-demo-pretrain")
    assert followed == Path(stage_run)                       # the follower reads the pre-training run meanwhile
    assert run_state(host) == "stopped" and f"pretrain --resume {stage_run}" in read_status(host)["message"]
    assert run_state(stage_run) == "stopped" and (Path(stage_run) / "last.pt").is_file()


def test_ctrl_c_during_train_dsrs_pretraining_says_where_its_resumable_checkpoint_is(mini, tmp_path, capsys,
                                                                                      monkeypatch):
    """A stop during train-dsr's automatic pre-training said "nothing resumable was saved" while the
    pre-training's last.pt existed."""
    import os
    import signal

    from workbench.cli import job_runner

    drawn, pressed = job_runner.console_progress, []

    def interrupting_progress():
        progress, emit = drawn()

        def wrapped(event):
            emit(event)
            if isinstance(event, Progress) and event.stage == "pretrain" and not pressed:
                pressed.append(event)
                os.kill(os.getpid(), signal.SIGINT)                 # Ctrl-C after the first pre-training step
        return progress, wrapped

    monkeypatch.setattr(job_runner, "console_progress", interrupting_progress)
    preset_file = store.save(store.derive(mini.with_changes({"finetune.pretrain_epochs": 500, "dsr.epochs": 1}),
                                          "stopper"), tmp_path / "stopper.toml")
    assert main(["train-dsr", "--preset", str(preset_file)]) == 130
    out = "".join(capsys.readouterr().out.split())                  # rich wraps long paths anywhere
    [pretraining] = [p for p in Path(mini.runtime.runs_dir).iterdir() if p.name.endswith("-stopper-pretrain")]
    assert (pretraining / "last.pt").is_file()
    assert "nothingresumable" not in out
    assert f"stoppedearly;stoppedduringtherecogniserpre-training:itsresumablecheckpointis{pretraining}/last.pt" in out
    assert f"`vlr-workbenchpretrain--resume{pretraining}`finishesit,thenstartthisjobagain" in out
    assert not any(p.name.endswith("-train-dsr") for p in Path(mini.runtime.runs_dir).iterdir())


def test_missing_data_root_and_zero_epochs_are_user_errors(preset, tmp_path):
    result = run_job(JobRequest("pretrain", preset, data=str(tmp_path / "no-data")), lambda e: None)
    assert not isinstance(result, Finished)
    assert "no-data" in result.error and result.traceback is None
    result = run_job(JobRequest("finetune", preset, options={"stage1_epochs": 0, "stage2_epochs": 0}), lambda e: None)
    assert "nothing to train" in result.error and "--stage2-epochs" in result.error
    result = run_job(JobRequest("pretrain", preset.with_changes({"finetune.pretrain_epochs": 0})), lambda e: None)
    assert "nothing to train" in result.error and "--epochs" in result.error


# ----------------------------------------------------------------------------- pieces


def test_closed_set_uses_val_images_of_training_identities(demo_root):
    train = load_split(demo_root, "train", (16, 16), 128)
    val = load_split(demo_root, "val", (16, 16), 128)
    tr, va, note = closed_set(train, val, "vlr")
    assert len(tr) == len(train) and len(va) == len(val)
    assert [train.classes[i] for i in va.labels.tolist()] == val.subjects
    # a val split of other identities: one image per training identity is held out instead
    foreign = PairedSplit("val", val.root, val.names, [f"x{s}" for s in val.subjects], [f"x{c}" for c in val.classes],
                          val.labels, val.hr, val.vlr)
    tr, va, note = closed_set(train, foreign, "hr")
    assert "holding out" in note
    assert len(tr) + len(va) == len(train) and len(va) == len(train.classes)
    assert sorted(va.labels.tolist()) == list(range(len(train.classes)))
    with pytest.raises(WorkbenchError, match="no validation images"):
        single = PairedSplit("train", train.root, train.names[:2], ["a", "b"], ["a", "b"], torch.tensor([0, 1]),
                             train.hr[:2], train.vlr[:2])
        closed_set(single, foreign, "hr")


def test_prediction_entropy_shows_collapse():
    def entropy(predicted):
        return histogram_entropy(torch.bincount(predicted, minlength=5))
    assert entropy(torch.zeros(20, dtype=torch.long)) == 0.0
    assert entropy(torch.arange(20) % 5) == pytest.approx(1.0)
    assert 0.0 < entropy(torch.tensor([0, 0, 0, 1])) < 0.5


def test_augmentation_is_per_sample_and_stays_in_range():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 32, 32)
    flipped = FinetuneAugment(flip_p=0.5)(images, g)
    is_flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(flipped, images)]
    assert 10 < sum(is_flipped) < 54 and all(f or torch.equal(a, b) for f, a, b in zip(is_flipped, flipped, images))
    assert torch.equal(FinetuneAugment()(images, g), images)
    full = FinetuneAugment(0.5, 0.07, 0.07, 0.05, 0.02, 5.0)(images, g)
    assert full.shape == images.shape and full.min() >= 0.0 and full.max() <= 1.0
    brightness = FinetuneAugment(brightness=0.3)(torch.full((32, 3, 4, 4), 0.5), g)
    means = brightness.mean(dim=(1, 2, 3))
    assert means.std() > 0.02 and means.min() >= 0.5 * 0.7 - 1e-6 and means.max() <= 0.5 * 1.3 + 1e-6


def test_cli_parses_the_guides_finetune_command_and_pretrain():
    from workbench.cli.finetune_cmd import finetune_command, pretrain_command
    from workbench.cli.main import build_parser

    args = build_parser().parse_args(["finetune", "--preset", "vlr-32x32", "--stage2-epochs", "25"])
    assert args.func is finetune_command and args.stage2_epochs == 25 and args.stage1_epochs is None
    args = build_parser().parse_args(["pretrain", "--epochs", "3", "--data", "d"])
    assert args.func is pretrain_command and args.epochs == 3 and args.data == "d"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--epochs", "0"])


def test_early_stopping_follows_the_patience(preset, demo_root, monkeypatch, tmp_path):
    from engine import distributed
    from engine.models.dsr import upscale_bicubic
    from engine.runtime import resolve
    from engine.train.bookkeeper import Bookkeeper
    from engine.train.recognition import ArcFaceTrainer

    train, val = (load_split(demo_root, s, (16, 16), 128) for s in ("train", "val"))
    runtime = resolve(preset)
    book = Bookkeeper.open("finetune", preset, lambda e: None, StopFlag(), distributed.SINGLE, runtime.device,
                           run_dir=tmp_path / "run")
    trainer = ArcFaceTrainer(book, preset, runtime, build_edgeface("edgeface_xxs"), train, val, "vlr",
                             lambda v: upscale_bicubic(v.float() / 255, 128), torch.Generator())
    scores = iter([0.2, 0.5, 0.4, 0.5, 0.3, 0.9, 0.9])
    monkeypatch.setattr(trainer, "validate", lambda: {"loss": 1.0, "top1": next(scores), "entropy": 1.0})
    result = trainer.run_stage("stage2", 7, train_backbone=True, patience=3)
    assert result.early_stopped and result.epochs_run == 5 and result.best_epoch == 2
    assert book.state.best_score == 0.5 and (book.run.path / "best.pt").is_file()
    assert [r["epoch"] for r in read_metrics(book.run.path) if r["split"] == "val"] == [1, 2, 3, 4, 5]


def test_pretraining_from_scratch_on_hr_learns_above_chance(preset):
    events: list = []
    no_early_stop = preset.with_changes({"finetune.early_stop_patience": 0})
    result = run_job(JobRequest("pretrain", no_early_stop, options={"epochs": 20}), events.append)
    assert isinstance(result, Finished), getattr(result, "error", result)
    val = [e.values["top1"] for e in events if isinstance(e, Metrics) and e.split == "val"]
    train = [e.values["loss"] for e in events if isinstance(e, Metrics) and e.split == "train"]
    chance = 1.0 / result.summary["identities"]
    assert len(val) == 20 and result.summary["input"] == "hr"
    assert result.summary["best_val_top1"] >= 3 * chance and max(val) > val[0]
    assert sum(train[-3:]) < sum(train[:3])
    assert result.run_dir.name.endswith("-cpu-demo-pretrain") and (result.run_dir / "best.pt").is_file()


def test_a_non_finite_loss_fails_the_run_with_the_fix(mini, start_weights, tmp_path, monkeypatch):
    import engine.train.recognition as recognition

    real_loss = recognition.arcface_loss
    monkeypatch.setattr(recognition, "arcface_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    result = run_job(JobRequest("finetune", mini, options={"edgeface": str(start_weights), "stage1_epochs": 1,
                                                           "stage2_epochs": 0, "run_dir": str(tmp_path / "nan")}),
                     lambda event: None)
    assert isinstance(result, Failed) and result.traceback is None
    assert "unstable" in result.error and "finetune.head_lr" in result.error
    last = torch.load(tmp_path / "nan" / "last.pt", weights_only=True) if (tmp_path / "nan" / "last.pt").exists() else None
    assert last is None or all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "nan" / "status.json").read_text())["state"] == "failed"
