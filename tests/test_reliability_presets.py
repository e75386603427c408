"""Presets that used to crash `presets validate` or a job, and the wording of preset errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import presets
from engine.errors import PresetError
from workbench.cli import main as cli_main
from workbench.cli.main import main


def _validate(capsys, path: Path) -> tuple[int, str]:
    code = main(["presets", "validate", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


CRASHERS = {  # file name -> (TOML text, words the message must hold)
    "int401": ("[dsr]\nepochs = " + "9" * 401 + "\n", ["dsr.epochs", "401-digit"]),
    "float401": ("[dsr]\nlearning_rate = " + "9" * 401 + "\n", ["dsr.learning_rate", "401-digit"]),
    "pair401": ("[dsr]\nbrightness = [1, " + "9" * 401 + "]\n", ["dsr.brightness", "401-digit"]),
    "seed401": ("[runtime]\nseed = " + "9" * 401 + "\n", ["runtime.seed", "401-digit"]),
    "seed2e32": ("[runtime]\nseed = 4294967296\n", ["runtime.seed", "out of range"]),
    "int5000": ("[dsr]\nepochs = " + "9" * 5000 + "\n", ["4300 digits"]),
    "nested": ("[dsr]\nbrightness = " + "[" * 1000 + "]" * 1000 + "\n", ["nested too deeply"]),
    "nul_name": ('[preset]\nname = "a\\u0000b"\n', ["preset.name", "not a valid preset name"]),
    "nul_runs": ('[runtime]\nruns_dir = "runs\\u0000x"\n', ["runtime.runs_dir", "NUL"]),
    "long_name": ('[preset]\nname = "' + "n" * 5000 + '"\n', ["preset.name", "5000 characters"]),
    "escape": ('[preset]\nname = "../../escape/x"\n', ["preset.name", "not a valid preset name"]),
    "long_part": ('[runtime]\nruns_dir = "' + "d" * 300 + '"\n', ["runtime.runs_dir", "255 bytes"]),
    "dup_key": ("[dsr]\nepochs = 1\nbatch_size = 2\nepochs = 3\n", ["dsr.epochs", "twice", "lines 2 and 4"]),
    "dup_table": ("[dsr]\nepochs = 1\n[eval]\n[dsr]\n", ["[dsr]", "twice"]),
    "huge_value": ('[runtime]\ndevice = "' + "x" * 100_000 + '"\n', ["runtime.device", "100000 characters"]),
}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_presets_that_crashed_validate_are_clean_errors(tmp_path, capsys, name):
    text, words = CRASHERS[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    code, err = _validate(capsys, path)
    assert code == 2
    assert str(path) in err
    for word in words:
        assert word in err, (word, err[:500])
    assert len(err) < 1500  # the value is quoted, capped: never the 100 kB it holds


def test_runs_dir_pointing_at_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    path = tmp_path / "p.toml"
    path.write_text(f'[runtime]\nruns_dir = "{tmp_path / "afile"}"\n')
    code, err = _validate(capsys, path)
    assert code == 2 and "runtime.runs_dir" in err and "is a file, not a directory" in err


def test_preset_paths_that_are_links_or_folders(tmp_path, capsys):
    loop = tmp_path / "loop.toml"
    os.symlink(loop, loop)
    code, err = _validate(capsys, loop)
    assert code == 2 and str(loop) in err and "loop of symbolic links" in err
    dangling = tmp_path / "dangling.toml"
    os.symlink(tmp_path / "gone.toml", dangling)
    code, err = _validate(capsys, dangling)
    assert code == 2 and "points at a missing file" in err
    code, err = _validate(capsys, tmp_path)
    assert code == 2 and "is a directory, not a preset file" in err and "does not exist" not in err


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, capsys):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[dsr]\nepochs = 3\n")
    assert _validate(capsys, path)[0] == 0
    assert presets.load(path).dsr.epochs == 3


def test_a_file_name_with_odd_characters_gets_a_safe_default_name(tmp_path):
    path = tmp_path / "my preset (copy).toml"
    path.write_text("[dsr]\nepochs = 3\n")
    assert presets.load(path).name == "my-preset-copy"


def test_value_errors_quote_at_most_200_characters(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text('[dsr]\nepochs = "' + "7" * 3000 + '"\n')
    with pytest.raises(PresetError) as err:
        presets.load(path)
    assert "dsr.epochs" in str(err.value) and "…" in str(err.value) and len(str(err.value)) < 600


def test_vgg19_advice_never_tells_to_copy_onto_the_preset_path(tmp_path):
    from engine.errors import WeightsError
    from engine.losses.perceptual import load_vgg19

    with pytest.raises(WeightsError) as err:
        load_vgg19("/etc/passwd")
    assert "copy it to /etc/passwd" not in str(err.value)
    assert "dsr.vgg19_weights" in str(err.value)
    with pytest.raises(WeightsError, match="is a directory"):
        load_vgg19(str(tmp_path))


def test_ctrl_c_while_torch_imports_is_interrupted_exit_130(monkeypatch, capsys):
    def interrupted_import(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main.importlib, "import_module", interrupted_import)
    assert main(["check-data", "x"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "Traceback" not in err


def test_set_values_that_crashed_save_as(capsys):
    deep = "[" * 1000 + "]" * 1000
    assert main(["presets", "save-as", "cpu-demo", "deep", "--set", f"dsr.brightness={deep}"]) == 2
    assert "dsr.brightness" in capsys.readouterr().err
    assert main(["presets", "save-as", "cpu-demo", "../up", "--set", "dsr.epochs=" + "9" * 500]) == 2
    assert "dsr.epochs" in capsys.readouterr().err
