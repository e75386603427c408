"""Generated hostile inputs through the CLI: every fault is exit 2 with the file or key named, never a traceback.

A seeded generator writes >= 500 presets (malformed TOML, wrong types, huge integers, deep nesting,
unknown keys, out-of-range values, unsafe names, NUL, BOM, odd paths, links) and >= 200 damaged
datasets and checkpoints (truncated, zero-byte, random-byte, wrong-size and 16-bit images, broken
links, damaged manifests; truncated, bit-flipped, foreign and malicious .pt files). They run
in-process through ``workbench.cli.main.main`` (fast), a few batches also as real processes.
Checked: exit codes only 0 or 2, no traceback, every error names the file, nothing written outside
the test's directories (and the runs directory of the evaluate calls).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import presets
from engine.io import atomic
from engine.io.checkpoints import load_checkpoint
from engine.data import HR_DIR, SPLITS, VLR_DIR, split_dir
from engine.data.demo import generate_demo_dataset
from engine.errors import WeightsError
from engine.models.dsr import DSRNet, load_dsr
from engine.models.edgeface import build_edgeface, edgeface_checkpoint
from engine.presets import FIELDS
from workbench.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SEED = 15
N_PRESETS = 520
N_DATASETS = 140
N_CHECKPOINTS = 84


# ----------------------------------------------------------------------------- running the CLI in-process


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` -> (exit code, stdout, stderr); an escaping exception is reported as code -1."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else -1
    except BaseException as exc:  # noqa: BLE001 - any escape is the failure this test looks for
        out, err = capsys.readouterr()
        return -1, out, f"{err}\nESCAPED {type(exc).__name__}: {str(exc)[:300]}"
    out, err = capsys.readouterr()
    return code, out, err


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _top_level_snapshot() -> set[str]:
    return set(os.listdir(ROOT)) | {f"home:{p}" for p in (Path.home() / ".config").glob("vlr-workbench*")}


# ----------------------------------------------------------------------------- presets


def _valid_value(rng: random.Random, key: str):
    info = FIELDS[key]
    if info.type == "bool":
        return rng.choice([True, False])
    if info.choices:
        return rng.choice(info.choices)
    if info.type == "str":
        return ""
    low = info.min if info.min is not None else 0
    high = info.max if info.max is not None else 1000
    if info.type == "range":
        a, b = sorted(rng.uniform(low, min(high, 10)) for _ in range(2))
        return [a, b]
    if info.type == "int":
        return rng.randint(int(low) + (1 if info.min_exclusive else 0), int(min(high, 1000)))
    value = rng.uniform(low, high)
    return value if value != low or not info.min_exclusive else high


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def _document(entries: dict[str, str]) -> str:
    """``{"section.key": raw TOML value}`` -> TOML text (sections in first-seen order)."""
    sections: dict[str, list[str]] = {}
    for key, raw in entries.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"{name} = {raw}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n\n" for s, lines in sections.items())


BAD_NAMES = ["../../escape/x", "a/b", "", " ", "..", ".hidden", "-dash", "x" * 65, "x" * 5000, "tab\there",
             "nul\u0000", "ünïcödé", "emoji😀", "new\nline", "C:\\win", "name with spaces", "🙂" * 40]
WRONG_VALUES = ['"text"', "true", "[1, 2, 3]", "{a = 1}", "1979-05-27T07:32:00Z", "[]", '["a", "b"]',
                "[[1, 2], [3, 4]]", "inf", "-inf", "nan", "0x10", "1e309", "-0.0", "[true, false]", '""']


def _preset_case(rng: random.Random, index: int, folder: Path) -> Path:
    keys = list(FIELDS)
    kind = index % 16
    entries = {k: _toml_value(_valid_value(rng, k)) for k in rng.sample(keys, rng.randint(0, 6))}
    entries.pop("runtime.runs_dir", None)
    text = None
    if kind == 0:  # valid
        pass
    elif kind == 1:  # malformed TOML: a valid document with characters cut, inserted or swapped
        text = _document(entries or {"dsr.epochs": "3"})
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(text) + 1)
            text = text[:pos] + rng.choice(["[", "]", '"', "=", "\n", "'", "{", ",", "#", "\\", ""]) + text[pos + 1:]
    elif kind == 2:  # wrong types
        entries[rng.choice(keys)] = rng.choice(WRONG_VALUES)
    elif kind == 3:  # huge integers
        digits = rng.choice([20, 64, 309, 401, 2000, 4300, 4301, 5000])
        entries[rng.choice(keys)] = rng.choice(["", "-"]) + "9" * digits
    elif kind == 4:  # deep nesting of arrays or inline tables
        depth = rng.choice([3, 10, 50, 200, 1000, 1500])
        entries[rng.choice(keys)] = ("[" * depth + "1" + "]" * depth if rng.random() < 0.5
                                     else "{a = " * depth + "1" + "}" * depth)
    elif kind == 5:  # unknown keys and sections
        bogus = rng.choice(["dsr.epoch", "dsr.lambda_idenity", "data.vlr", "runtime.gpu", "nosuch.key",
                            "preset.title", "dsr.epochs.x", "x" * 3000 + ".y", "DSR.epochs"])
        entries[bogus] = "1"
    elif kind == 6:  # out of range
        key = rng.choice([k for k in keys if FIELDS[k].type in ("int", "float", "range")])
        info = FIELDS[key]
        bad = rng.choice([(info.min if info.min is not None else 0) - 1, (info.max or 1e6) * 10, -1e300, 1e300])
        entries[key] = _toml_value([bad, bad] if info.type == "range" else
                                   int(bad) if info.type == "int" else float(bad))
    elif kind == 7:  # preset names
        entries["preset.name"] = json.dumps(rng.choice(BAD_NAMES))
    elif kind == 8:  # NUL and control characters in text values
        key = rng.choice(["preset.name", "preset.description", "runtime.runs_dir", "data.root",
                          "runtime.edgeface_weights", "runtime.device", "dsr.vgg19_weights"])
        entries[key] = json.dumps(rng.choice(["a\u0000b", "\u0000", "x\u0007y", "line\nbreak", "\u202eevil"]))
    elif kind == 9:  # byte-order marks
        text = "\ufeff" + _document(entries) if rng.random() < 0.7 else _document(entries) + "\ufeff"
    elif kind == 10:  # paths
        entries[rng.choice(["runtime.runs_dir", "data.root", "runtime.edgeface_weights", "dsr.vgg19_weights"])] = \
            json.dumps(rng.choice([str(folder / "afile"), "d" * 300, "/" + "/".join(["x" * 200] * 25), "~/../..",
                                   str(folder), "relative/dir", "/proc/self/mem", "x" * 5000]))
    elif kind == 11:  # not text at all
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
        path = folder / f"case{index:04d}.toml"
        path.write_bytes(data)
        return path
    elif kind == 12:  # duplicate keys or tables
        key = rng.choice(keys)
        section, name = key.split(".", 1)
        text = (_document(entries) + f"[{section}]\n{name} = 1\n{name} = 2\n" if rng.random() < 0.5
                else f"[{section}]\n[{section}]\n")
    elif kind == 13:  # huge values
        entries[rng.choice(keys)] = json.dumps("v" * rng.choice([5000, 100_000, 600_000]))
    elif kind == 14:  # links and folders as the preset path
        path = folder / f"case{index:04d}.toml"
        choice = index % 3
        if choice == 0:
            os.symlink(path, path)
        elif choice == 1:
            os.symlink(folder / f"missing{index}.toml", path)
        else:
            path.mkdir()
        return path
    else:  # several faults together
        for _ in range(3):
            entries[rng.choice(keys)] = rng.choice(WRONG_VALUES + ["9" * 500, "[" * 20 + "]" * 20])
    path = folder / f"case{index:04d}.toml"
    path.write_text(text if text is not None else _document(entries), encoding="utf-8", errors="surrogatepass")
    return path


@pytest.fixture(scope="module")
def preset_cases(tmp_path_factory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("hostile_presets")
    (folder / "afile").write_text("")
    rng = random.Random(SEED)
    return folder, [_preset_case(rng, i, folder) for i in range(N_PRESETS)]


def test_generated_presets_validate_cleanly_in_process(preset_cases, capsys, monkeypatch):
    folder, paths = preset_cases
    monkeypatch.chdir(folder)
    before, top = _files(folder), _top_level_snapshot()
    codes = {0: 0, 2: 0}
    problems = []
    for path in paths:
        code, out, err = _run(capsys, ["presets", "validate", str(path)])
        if code not in (0, 2) or "Traceback" in err or "ESCAPED" in err:
            problems.append((path.name, code, err[-400:]))
        elif code == 2 and str(path) not in err:
            problems.append((path.name, "file not named", err[:300]))
        elif code == 2 and len(err) > 3000:
            problems.append((path.name, f"{len(err)}-character message", err[:300]))
        else:
            codes[code] += 1
    assert not problems, problems[:5]
    assert len(paths) >= 500 and codes[0] >= 20 and codes[2] >= 300, codes
    assert _files(folder) == before and _top_level_snapshot() == top  # validate wrote nothing anywhere


def test_generated_presets_in_real_processes(preset_cases):
    """Two batches of the same files through the installed entry point, as a user runs it."""
    folder, paths = preset_cases
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for batch in (paths[0:48], paths[472:520]):
        result = subprocess.run([sys.executable, "-m", "workbench.cli.main", "presets", "validate",
                                 *map(str, batch)], capture_output=True, text=True, env=env, cwd=folder,
                                timeout=120)
        assert result.returncode in (0, 2), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        shown = result.stdout + result.stderr
        assert all(str(p) in shown for p in batch)  # each file reported, valid or invalid


# ----------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory) -> Path:
    """4 identities x 3 demo faces (VLR 8x8, HR 32): the dataset every damaged copy starts from."""
    return generate_demo_dataset(tmp_path_factory.mktemp("hostile_data") / "base", identities=4, per_identity=3,
                                 seed=0, vlr_size=(8, 8), hr_size=32)


def _linked_copy(base: Path, root: Path) -> None:
    """A copy of ``base`` made of hard links (fast); :func:`_own` gives a file its own bytes before a change."""
    shutil.copytree(base, root, symlinks=True, copy_function=os.link)


def _own(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)


def _damage_dataset(rng: random.Random, index: int, root: Path) -> None:
    split = rng.choice(SPLITS)
    folder = split_dir(root, split) / rng.choice([HR_DIR, VLR_DIR])
    files = sorted(folder.iterdir())
    victim = rng.choice(files)
    _own(victim)
    _own(root / "manifest.json")
    kind = index % 15
    if kind == 0:  # truncated PNG
        data = victim.read_bytes()
        victim.write_bytes(data[: rng.randrange(len(data))])
    elif kind == 1:
        victim.write_bytes(b"")
    elif kind == 2:
        victim.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000))))
    elif kind == 3:  # wrong size
        with Image.open(victim) as image:
            image.resize((image.width + rng.randint(1, 5), image.height)).save(victim)
    elif kind == 4:  # partner missing
        victim.unlink()
    elif kind == 5:  # an unpaired extra image
        shutil.copy(victim, folder / f"999_{index}.png")
    elif kind == 6:  # dangling link
        victim.unlink()
        os.symlink(folder / "gone.png", victim)
    elif kind == 7:  # a loop of links
        victim.unlink()
        os.symlink(victim, victim)
    elif kind == 8:  # a folder with an image name
        victim.unlink()
        victim.mkdir()
    elif kind == 9:  # 16-bit greyscale (valid: scaled to 8 bits)
        with Image.open(victim) as image:
            grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(victim)
    elif kind == 10:  # other colour modes and a JPEG named .png (valid)
        with Image.open(victim) as image:
            converted = image.convert(rng.choice(["L", "RGBA", "P", "CMYK", "1"]))
        converted.save(victim, format="JPEG" if converted.mode in ("L", "CMYK") and rng.random() < 0.5 else None)
    elif kind == 11:  # damaged manifest
        (root / "manifest.json").write_text(rng.choice(["{", "[]", '{"vlr_size": [0, -1]}', '{"vlr_size": "8x8"}',
                                                        '{"vlr_size": [8, 8], "hr_size": "x"}', "\u0000"]))
    elif kind == 12:  # a split folder missing or empty
        shutil.rmtree(folder)
        if rng.random() < 0.5:
            folder.mkdir()
    elif kind == 13:  # text with an image suffix, hidden files (ignored)
        victim.write_text("this is not an image")
        (folder / ".DS_Store").write_bytes(b"\x00\x01")
    else:  # a header-only PNG of a huge declared size (decompression bomb guard)
        victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (60000).to_bytes(4, "big") * 2
                           + b"\x08\x02\x00\x00\x00" + b"\x00" * 4)


def test_generated_damaged_datasets_through_check_data(base_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED + 1)
    top = _top_level_snapshot()
    base_files, base_manifest = _files(base_dataset), (base_dataset / "manifest.json").read_bytes()
    problems, codes = [], {0: 0, 2: 0}
    for index in range(N_DATASETS):
        root = tmp_path / f"ds{index:03d}"
        _linked_copy(base_dataset, root)
        _damage_dataset(rng, index, root)
        before = _files(root)
        code, out, err = _run(capsys, ["check-data", str(root)])
        if code not in (0, 2) or "Traceback" in err or "ESCAPED" in err:
            problems.append((index, code, err[-400:]))
        elif code == 2 and str(root) not in err:
            problems.append((index, "file not named", err[:300]))
        elif code == 0 and "OK" not in out:
            problems.append((index, "exit 0 without OK", out[-300:]))
        else:
            codes[code] += 1
        if _files(root) != before:
            problems.append((index, "check-data changed the dataset"))
        shutil.rmtree(root)
    assert not problems, problems[:5]
    assert codes[2] >= 80 and codes[0] >= 10, codes
    assert _top_level_snapshot() == top
    assert _files(base_dataset) == base_files and (base_dataset / "manifest.json").read_bytes() == base_manifest


def test_damaged_datasets_in_a_real_process(base_dataset, tmp_path):
    rng = random.Random(SEED + 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for index in (0, 6, 7):  # truncated PNG, dangling link, loop of links
        root = tmp_path / f"ds{index}"
        _linked_copy(base_dataset, root)
        _damage_dataset(rng, index, root)
        result = subprocess.run([sys.executable, "-m", "workbench.cli.main", "check-data", str(root)],
                                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert str(root) in result.stderr


# ----------------------------------------------------------------------------- checkpoints


class _Marker:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def checkpoint_kit(tmp_path_factory, base_dataset):
    folder = tmp_path_factory.mktemp("hostile_ckpt")
    torch.manual_seed(0)
    dsr = DSRNet((8, 8), 32, base_channels=4, residual_blocks=1)
    good = atomic.torch_save(folder / "good.pt", {"kind": "dsr", "config": dsr.config, "epoch": 1,
                                                  "state_dict": dsr.state_dict()})
    recogniser = atomic.torch_save(folder / "xxs.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    preset = presets.load("cpu-demo").with_changes({
        "data.vlr_width": 8, "data.vlr_height": 8, "data.hr_size": 32, "data.root": str(base_dataset),
        "runtime.device": "cpu", "runtime.runs_dir": str(folder / "runs")})
    preset_file = presets.save(preset, folder / "tiny.toml")
    return {"folder": folder, "good": good, "dsr": dsr, "recogniser": recogniser, "preset_file": preset_file}


def _damaged_checkpoint(rng: random.Random, index: int, kit: dict, path: Path, marker: Path) -> None:
    data = kit["good"].read_bytes()
    dsr = kit["dsr"]
    kind = index % 14
    if kind == 0:
        path.write_bytes(data[: rng.randrange(len(data))])
    elif kind == 1:  # flipped bytes anywhere (the zip index, a pickle, tensor data)
        raw = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
    elif kind == 2:
        path.write_bytes(b"")
    elif kind == 3:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000))))
    elif kind == 4:
        torch.save(rng.choice([[1, 2], "text", torch.zeros(3), 7, None, (1, 2)]), path)
    elif kind == 5:  # a dict missing keys or of another kind
        torch.save(rng.choice([{}, {"kind": "dsr"}, {"kind": "edgeface", "state_dict": {}},
                               {"kind": "dsr", "config": {"vlr_size": [8, 8]}, "state_dict": {}},
                               {"kind": ["dsr"], "config": 1}]), path)
    elif kind == 6:  # a config the weights do not fit
        torch.save({"kind": "dsr", "config": {**dsr.config, "base_channels": 8}, "state_dict": dsr.state_dict()},
                   path)
    elif kind == 7:  # a config of absurd or wrong-typed values
        torch.save({"kind": "dsr", "config": rng.choice([{**dsr.config, "vlr_size": "8x8"},
                                                          {**dsr.config, "residual_blocks": -3},
                                                          {**dsr.config, "hr_size": None}]),
                    "state_dict": dsr.state_dict()}, path)
    elif kind == 8:  # a malicious pickle
        torch.save({"kind": "dsr", "config": dsr.config, "state_dict": {}, "x": _Marker(str(marker))}, path)
    elif kind == 9:  # TorchScript
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    elif kind == 10:  # a zip that is not a checkpoint
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", b"\x80\x02junk")
    elif kind == 11:  # the legacy (non-zip) torch format: valid
        torch.save({"kind": "dsr", "config": dsr.config, "state_dict": dsr.state_dict()}, path,
                   _use_new_zipfile_serialization=False)
    elif kind == 12:  # a path that is not a file
        path.mkdir()
    else:  # state dict with wrong shapes or dtypes
        bad = {k: torch.zeros(1, dtype=rng.choice([torch.float32, torch.int8, torch.bool]))
               for k in dsr.state_dict()}
        torch.save({"kind": "dsr", "config": dsr.config, "state_dict": bad}, path)


def test_generated_damaged_checkpoints_load_or_fail_cleanly(checkpoint_kit, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED + 2)
    marker = tmp_path / "marker"
    top = _top_level_snapshot()
    problems, loaded, refused, evaluated = [], 0, 0, []
    kit = checkpoint_kit
    for index in range(N_CHECKPOINTS):
        path = tmp_path / f"ckpt{index:03d}.pt"
        _damaged_checkpoint(rng, index, kit, path, marker)
        for loader in (lambda: load_checkpoint(path, what="DSR checkpoint"), lambda: load_dsr(path)):
            try:
                loader()
                loaded += 1
            except WeightsError as exc:
                refused += 1
                if str(path) not in str(exc) or len(str(exc)) > 2000:
                    problems.append((index, "message", str(exc)[:300]))
            except BaseException as exc:  # noqa: BLE001
                problems.append((index, type(exc).__name__, str(exc)[:300]))
        if index % 7 == 0:  # a sample through the whole `evaluate --dsr` command
            code, out, err = _run(capsys, ["evaluate", "--preset", str(kit["preset_file"]), "--edgeface",
                                           str(kit["recogniser"]), "--dsr", str(path)])
            evaluated.append(code)
            if code not in (0, 2) or "Traceback" in err or "ESCAPED" in err:
                problems.append((index, "evaluate", code, err[-400:]))
            elif code == 2 and str(path) not in err:
                problems.append((index, "evaluate: file not named", err[:300]))
    assert not problems, problems[:5]
    assert not marker.exists()
    assert refused >= 100 and loaded >= 4, (loaded, refused)
    assert len(evaluated) >= 10 and 2 in evaluated
    assert _top_level_snapshot() == top
    written = {p.name for p in kit["folder"].iterdir()}
    assert written <= {"good.pt", "xxs.pt", "tiny.toml", "runs"}  # evaluate wrote only into its runs_dir
