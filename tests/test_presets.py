"""Preset schema, built-ins, validation errors, saving and the `presets` CLI."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from engine import presets as P
from engine.errors import PresetError
from engine.presets.guide import SUMMARY_TABLE_KEYS, VLR_SIZE_KEYS
from workbench.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

# The guide's numbers: key -> (14x16 "Was" value, 32x32 value).
GUIDE = {
    "dsr.batch_size": (16, 14),
    "dsr.learning_rate": (1.5e-4, 1.3e-4),
    "dsr.lambda_perceptual": (0.02, 0.025),
    "dsr.lambda_identity": (0.50, 0.60),
    "dsr.lambda_feature_match": (0.15, 0.18),
    "dsr.lambda_tv": (3e-6, 2e-6),
    "dsr.base_channels": (112, 128),
    "dsr.residual_blocks": (16, 16),
    "dsr.epochs": (100, 100),
    "dsr.warmup_epochs": (5, 5),
    "dsr.grad_clip": (1.0, 1.0),
    "dsr.rotation_p": (0.60, 0.65),
    "dsr.rotation_degrees": (5.0, 6.0),
    "dsr.color_jitter_p": (0.25, 0.3),
    "dsr.brightness": ((0.95, 1.05), (0.93, 1.07)),
    "dsr.contrast": ((0.95, 1.05), (0.93, 1.07)),
    "dsr.saturation": ((0.97, 1.03), (0.96, 1.04)),
    "finetune.stage2_epochs": (20, 25),
    "finetune.batch_size": (32, 28),
    "finetune.head_lr": (1e-3, 9e-4),
    "finetune.backbone_lr": (5e-6, 6e-6),
    "finetune.head_lr_stage2": (5e-5, 6e-5),
    "finetune.arcface_margin": (0.5, 0.45),
    "finetune.weight_decay": (5e-5, 3e-5),
    "finetune.label_smoothing": (0.1, 0.08),
    "finetune.early_stop_patience": (8, 10),
    "finetune.flip_p": (0.5, 0.5),
    "finetune.jitter_brightness": (0.05, 0.07),
    "finetune.jitter_contrast": (0.05, 0.07),
    "finetune.jitter_saturation": (0.03, 0.05),
    "finetune.jitter_hue": (0.0, 0.02),
    "finetune.rotation_degrees": (0.0, 5.0),
    "eval.threshold": (0.35, 0.35),
    "data.vlr_width": (14, 32),
    "data.vlr_height": (16, 32),
    "data.hr_size": (128, 128),
}

BASE = """
[preset]
name = "broken"
[dsr]
learning_rate = 1e-4
"""


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_builtins_hold_every_guide_number():
    old, new = P.load("vlr-14x16"), P.load("vlr-32x32")
    for key, (was, now) in GUIDE.items():
        assert old.get(key) == pytest.approx(was), key
        assert new.get(key) == pytest.approx(now), key
    assert new.vlr_size == (32, 32) and old.vlr_size == (14, 16)


def test_every_field_has_help_and_range():
    for info in P.iter_fields():
        assert info.help, info.key
        assert info.range_text(), info.key
    required = ["dsr.ema_decay", "dsr.weight_decay", "finetune.stage1_epochs", "finetune.arcface_scale",
                "runtime.device", "runtime.amp", "runtime.seed", "runtime.edgeface_variant",
                "runtime.edgeface_weights", "data.root"]
    for key in required:
        assert key in P.FIELDS


def test_diff_lists_the_summary_table_and_vlr_size(capsys):
    changes = {key for key, _, _ in P.diff(P.load("vlr-14x16"), P.load("vlr-32x32"))}
    table = set(SUMMARY_TABLE_KEYS) | set(VLR_SIZE_KEYS)
    assert table <= changes
    # Everything else that differs is a change the guide's detailed sections make.
    assert changes - table == {k for k, (was, now) in GUIDE.items() if was != now} - table
    code, out, _ = cli(capsys, "presets", "diff", "vlr-14x16", "vlr-32x32")
    assert code == 0
    first_group = out.split("other parameters")[0]
    assert re.search(r"dsr\.learning_rate\s+│\s+1\.5e-4\s+│\s+1\.3e-4", first_group)
    assert re.search(r"finetune\.arcface_margin\s+│\s+0\.5\s+│\s+0\.45", first_group)
    assert re.search(r"data\.vlr_width\s+│\s+14\s+│\s+32", first_group)
    listed = set(re.findall(r"((?:data|dsr|finetune)\.\w+)", first_group))
    assert listed == table


def test_list_and_show(capsys):
    code, out, _ = cli(capsys, "presets", "list")
    assert code == 0
    for name in ("cpu-camera", "cpu-demo", "cpu-real", "cpu-real-labelled", "vlr-14x16", "vlr-32x32"):
        assert name in out
    # the app's number keys follow this order: by name ("cpu-real.toml" sorts after "cpu-real-labelled.toml")
    assert [e.name for e in P.list_presets() if e.builtin] == P.builtin_names()
    assert out.index("cpu-real ") < out.index("cpu-real-labelled")
    code, out, _ = cli(capsys, "presets", "show", "vlr-32x32", "--toml")
    doc = tomllib.loads(out)
    assert doc["dsr"]["learning_rate"] == 1.3e-4 and doc["dsr"]["lambda_identity"] == 0.6
    assert doc["finetune"]["batch_size"] == 28 and doc["dsr"]["brightness"] == [0.93, 1.07]
    code, out, _ = cli(capsys, "presets", "show", "vlr-32x32")
    assert code == 0 and "lambda_identity" in out and "1.3e-4" in out


@pytest.mark.parametrize("body, expected", [
    ("[dsr\nbatch_size = 3\n", [r"line 1, column 5", r"\[section\]"]),
    (BASE + "lamda_identity = 0.7\n", [r"dsr\.lamda_identity", r"did you mean 'dsr\.lambda_identity'"]),
    (BASE + 'batch_size = "sixteen"\n', [r"dsr\.batch_size", r"whole number", r"\[1, 4096\]"]),
    (BASE.replace("1e-4", "-1e-4"), [r"dsr\.learning_rate", r"out of range", r"\(0, 1\]"]),
    (BASE + "rotation_p = 1.5\n", [r"dsr\.rotation_p", r"out of range", r"\[0, 1\]"]),
    ("[dsrr]\nbatch_size = 3\n", [r"unknown section \[dsrr\]", r"did you mean 'dsr'"]),
    (BASE + "brightness = [1.1, 0.9]\n", [r"dsr\.brightness", r"low must not exceed high"]),
    ('[runtime]\namp = "fp8"\n', [r"runtime\.amp", r"one of: auto, bf16, fp16, off"]),
    ('[runtime]\ndevice = "tpu9"\n', [r"'runtime\.device' is 'tpu9'", r"Valid: auto, cpu, cuda or cuda:N"]),
    ('[runtime]\ndevice = "cuda:x"\n', [r"'runtime\.device' is 'cuda:x'", r"Valid: auto, cpu, cuda or cuda:N"]),
])
def test_validate_rejects_bad_files(tmp_path, capsys, body, expected):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    code, out, err = cli(capsys, "presets", "validate", str(path))
    assert code == 2
    assert "Traceback" not in out + err
    message = " ".join(err.split())
    assert str(path) in message.replace(" ", "") or path.name in message
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)
    assert message.count("invalid:") == 1


def test_validate_missing_file_and_good_files(tmp_path, capsys):
    code, _, err = cli(capsys, "presets", "validate", str(tmp_path / "nope.toml"))
    assert code == 2 and "not found" in err
    code, out, _ = cli(capsys, "presets", "validate", str(ROOT / "presets" / "vlr-32x32.toml"),
                       str(ROOT / "presets" / "cpu-demo.toml"))
    assert code == 0 and out.count("valid:") == 2


def test_save_as_round_trip(capsys):
    code, out, _ = cli(capsys, "presets", "save-as", "vlr-32x32", "mine", "--set", "dsr.lambda_identity=0.7",
                       "--set", 'runtime.device="cpu"')
    assert code == 0
    path = P.user_dir() / "mine.toml"
    assert path.is_file()
    mine = P.load("mine")
    assert mine.dsr.lambda_identity == 0.7 and mine.runtime.device == "cpu"
    assert mine.derived_from == "vlr-32x32" and mine.name == "mine"
    assert P.diff(P.load("vlr-32x32"), mine) == [("dsr.lambda_identity", 0.6, 0.7), ("runtime.device", "auto", "cpu")]
    code, out, _ = cli(capsys, "presets", "show", "mine")
    assert code == 0 and "0.7" in out
    code, out, _ = cli(capsys, "presets", "list")
    assert code == 0 and re.search(r"mine\s+│\s+user", out)
    # Existing files are not replaced without --force; bad --set values are refused.
    code, _, err = cli(capsys, "presets", "save-as", "vlr-32x32", "mine")
    assert code == 2 and "--force" in err
    code, _, err = cli(capsys, "presets", "save-as", "vlr-32x32", "other", "--set", "dsr.batch_size=0")
    assert code == 2 and "dsr.batch_size" in err and not (P.user_dir() / "other.toml").exists()


def test_builtins_are_read_only(capsys):
    before = (ROOT / "presets" / "vlr-32x32.toml").read_bytes()
    code, _, err = cli(capsys, "presets", "save-as", "cpu-demo", "vlr-32x32", "--force")
    assert code == 2 and "built-in" in err and "save-as" in err
    with pytest.raises(PresetError, match="read-only"):
        P.save(P.load("vlr-32x32"), ROOT / "presets" / "vlr-32x32.toml", overwrite=True)
    assert (ROOT / "presets" / "vlr-32x32.toml").read_bytes() == before


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "p.toml"
    P.save(P.load("cpu-demo"), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        P.save(P.load("vlr-32x32"), path, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.toml"]


def test_user_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VLR_WORKBENCH_CONFIG_DIR", str(tmp_path / "cfg"))
    assert P.user_dir() == tmp_path / "cfg" / "presets"
    monkeypatch.delenv("VLR_WORKBENCH_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert P.user_dir() == tmp_path / "xdg" / "vlr-workbench" / "presets"


def test_help_on_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    top = capsys.readouterr().out
    commands = re.findall(r"^    (\S+)", top, flags=re.M)
    assert "presets" in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_builtins_found_from_a_wheel_install(tmp_path):
    """A normal (non-editable) install ships the built-in presets inside the package."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True)
    wheel = next(wheel_dir.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"engine/_builtin_presets/cpu-demo.toml", "engine/_builtin_presets/vlr-32x32.toml"} <= set(names)
    zipfile.ZipFile(wheel).extractall(target)
    result = subprocess.run([sys.executable, "-c", "from engine.presets import builtin_names, store; "
                             "print(builtin_names(), store.builtin_dir())"],
                            cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, check=True)
    assert "['cpu-camera', 'cpu-demo', 'cpu-real', 'cpu-real-labelled', 'vlr-14x16', 'vlr-32x32']" in result.stdout
    assert str(target) in result.stdout


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_every_device_the_runtime_knows_validates(device):
    assert P.load("cpu-demo").with_changes({"runtime.device": device}).runtime.device == device


def test_a_device_typo_in_set_names_the_key_and_the_devices():
    with pytest.raises(PresetError) as caught:
        P.load("cpu-demo").with_changes({"runtime.device": "gpu"})
    message = str(caught.value)
    assert "'runtime.device' is 'gpu'" in message and "auto, cpu, cuda or cuda:N" in message
    assert "\n" not in message


# cpu-real: cpu-demo's values at 16x16 with the authors' EdgeFace weights required, found on lfw-dev (issue 24)
CPU_REAL_CHANGES = {"dsr.epochs", "finetune.pretrain_epochs", "runtime.edgeface_weights"}


def test_cpu_real_is_cpu_demo_sized_for_real_faces_with_required_weights(capsys):
    real, demo = P.load("cpu-real"), P.load("cpu-demo")
    assert real.vlr_size == (16, 16) and real.derived_from == "cpu-demo"
    assert {key for key, _, _ in P.diff(demo, real)} == CPU_REAL_CHANGES      # nothing else moved from cpu-demo
    assert real.finetune.pretrain_epochs == 0                                  # never pre-trains: weights required
    assert Path(real.runtime.edgeface_weights).name == "edgeface_xxs_q.pt"
    assert real.runtime.edgeface_variant == "edgeface_xxs" and real.eval.distractors == 0
    code, out, _ = cli(capsys, "presets", "validate", str(ROOT / "presets" / "cpu-real.toml"))
    assert code == 0 and "valid" in out


def test_cpu_real_labelled_is_cpu_real_with_dsr_steps_for_labelled_pairs_only(capsys):
    # issue 38: on a dataset without unlabelled faces DSR sees 2,112 pairs, not 5,181: 8 epochs, not 3
    labelled, real = P.load("cpu-real-labelled"), P.load("cpu-real")
    assert labelled.derived_from == "cpu-real"
    assert P.diff(real, labelled) == [("dsr.epochs", 3, 8)]                   # nothing else moved
    steps = lambda preset, pairs: preset.dsr.epochs * math.ceil(pairs / preset.dsr.batch_size)
    assert steps(labelled, 2112) >= steps(real, 5181)          # lfw-dev: at least cpu-real's DSR steps (1,056 >= 972)
    code, out, _ = cli(capsys, "presets", "validate", str(ROOT / "presets" / "cpu-real-labelled.toml"))
    assert code == 0 and "valid" in out


def test_cpu_real_without_its_weights_names_the_key_and_the_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)            # ../shared/weights does not exist from here
    runs = tmp_path / "runs"               # the built-in's runtime.runs_dir, relative to the working directory
    missing = (tmp_path / ".." / "shared" / "weights" / "edgeface_xxs_q.pt").absolute()
    # (train-dsr too: cpu-real's identity, feature-matching and perceptual terms run the authors' EdgeFace)
    for argv in (["pipeline", "--preset", "cpu-real", "--baselines"], ["finetune", "--preset", "cpu-real"],
                 ["evaluate", "--preset", "cpu-real"], ["train-dsr", "--preset", "cpu-real"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, argv
        assert "runtime.edgeface_weights of preset cpu-real" in err and str(missing) in err, argv
        assert "--edgeface PATH" in err and "Traceback" not in err, argv
    assert not runs.exists() or not any(runs.iterdir())     # refused before any run directory
    from engine.io.paths import cache_dir

    assert not list(cache_dir().glob("demo/*/manifest.json"))   # and before the demo faces were drawn


def test_cpu_real_finds_the_authors_weights_beside_a_checkout(shared_dir, monkeypatch):
    from engine.jobs.recogniser import preset_weights
    from engine.models.edgeface import load_edgeface

    if not (shared_dir / "weights" / "edgeface_xxs_q.pt").is_file():
        pytest.skip("../shared/weights/edgeface_xxs_q.pt is absent")
    monkeypatch.chdir(ROOT)
    path = preset_weights(P.load("cpu-real"))
    assert path.resolve() == (shared_dir / "weights" / "edgeface_xxs_q.pt").resolve()
    assert load_edgeface(path).variant == "edgeface_xxs"
