"""Issue 25, "must show": every run file kind x every damage kind, fed to every command that reads runs.

One tiny real run (train-dsr, one epoch, with eval.json, a TensorBoard export, samples and a log) is made once;
each case copies it, damages one file, and runs each reader command in-process. Each must end (``attach`` of a
run that is not running included), without a traceback, with exit 0 or 2, and change no file but those the
command owns (checked by hashing the runs tree and the files outside it that a symlink points to).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from engine import presets
from workbench.cli.main import main

from run_factory import EVAL, gone_pid
from tiny import tiny_dsr_data, tiny_dsr_preset

FILE_KINDS = {   # kind -> path inside the run
    "status": "status.json", "metrics": "metrics.jsonl", "progress": "progress.jsonl", "log": "log.jsonl",
    "summary": "summary.json", "eval": "eval.json", "preset": "preset.toml", "owner.lock": "owner.lock",
    "stop.request": "stop.request", "samples": "samples", "tensorboard": "tensorboard",
}
DAMAGES = ("missing", "empty", "truncated", "binary", "invalid-utf8", "wrong-json-type", "wrong-field-types",
           "huge", "directory", "symlink-out")
HUGE_BYTES = 3 * 2 ** 20
COMMAND_SECONDS = 60      # a command still going after this is a hang (attach of an ended run must end)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished one-epoch train-dsr run with every run file kind, made once."""
    top = tmp_path_factory.mktemp("corpus")
    data = tiny_dsr_data(top / "data", identities=6, per_identity=4)
    preset = tiny_dsr_preset(top / "runs")
    preset_file = presets.save(preset, top / "tiny.toml")
    run = top / "base" / "20260101-100000-tiny-train-dsr"
    with _quiet():
        assert main(["train-dsr", "--preset", str(preset_file), "--data", str(data), "--epochs", "1",
                     "--run-dir", str(run)]) == 0
        (run / "eval.json").write_text(json.dumps({**EVAL, "protocol": {"rows": {}}}))
        assert main(["export-tb", str(run)]) == 0
    # a lock left by a killed owner (its process gone): a resume takes it over
    (run / "owner.lock").write_text(json.dumps({"pid": gone_pid(), "host": socket.gethostname(), "time": 0.0}))
    (run / "stop.request").write_text("0 1\n")
    for name in ("status.json", "metrics.jsonl", "progress.jsonl", "log.jsonl", "summary.json", "preset.toml"):
        assert (run / name).is_file(), name
    assert list((run / "samples").glob("epoch_*.png")) and list((run / "tensorboard").iterdir())
    return run


@contextlib.contextmanager
def _quiet():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def _wrong_types(value):
    """Each field of a JSON document given a value of another type (numbers -> "abc", strings -> [1], ...)."""
    if isinstance(value, dict):
        return {k: _wrong_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return {"0": value}
    if isinstance(value, bool) or value is None:
        return "abc"
    if isinstance(value, (int, float)):
        return "abc"
    return [1]


def _damage_file(path: Path, damage: str, outside: Path) -> None:
    original = path.read_bytes() if path.is_file() else b""
    text = original.decode("utf-8", errors="replace")
    if damage == "truncated":
        path.write_bytes(original[: max(1, len(original) // 2)])
    elif damage == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif damage == "invalid-utf8":
        path.write_bytes(original.replace(b"\n", b"\xff\xfe\n", 1) if b"\n" in original else original + b"\xff")
    elif damage == "wrong-json-type":
        if path.suffix == ".jsonl":
            path.write_text("5\n" + text + "[1, 2]\n\"x\"\nnull\n")
        elif path.suffix == ".toml":
            path.write_text("5\n")
        else:
            path.write_text("[1, 2]")
    elif damage == "wrong-field-types":
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(_wrong_types(json.loads(line))) + "\n" for line in text.splitlines()))
        elif path.suffix == ".toml":
            path.write_text(text.replace(" = ", ' = "abc"\nx_', 3) if " = " in text else "a = 1\n")
        else:
            try:
                doc = json.loads(text)
            except ValueError:
                doc = {"pid": 1}
            path.write_text(json.dumps(_wrong_types(doc)))
    elif damage == "huge":
        if path.suffix == ".jsonl" and text.strip():
            line = text.splitlines()[0] + "\n"
            path.write_text(line * (HUGE_BYTES // len(line) + 1))
        else:
            path.write_bytes(b"1" + b"0" * HUGE_BYTES)
    elif damage == "symlink-out":
        target = outside / path.name
        target.write_bytes(original)
        path.unlink()
        path.symlink_to(target)


def _damage_dir(path: Path, damage: str, outside: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if damage == "empty":
        for p in files:
            p.unlink()
    elif damage in ("truncated", "binary", "invalid-utf8", "huge"):
        for p in files:
            _damage_file(p, damage, outside)
    elif damage == "wrong-json-type":         # a file where a folder belongs
        shutil.rmtree(path)
        path.write_text("5\n")
    elif damage == "wrong-field-types":       # names it does not expect
        (path / "epoch_abc.png").write_bytes(b"junk")
        (path / "epoch_001.png.png").mkdir()
        (path / "epoch_999999999999999999999.png").write_bytes(b"\x89PNG junk")
    elif damage == "directory":
        (path / "nested").mkdir()
        (path / "nested" / "epoch_002.png").write_bytes(b"junk")
    elif damage == "symlink-out":
        target = outside / path.name
        shutil.copytree(path, target)
        shutil.rmtree(path)
        path.symlink_to(target, target_is_directory=True)


def damage(run: Path, kind: str, how: str, outside: Path) -> None:
    path = run / FILE_KINDS[kind]
    if how == "missing":
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif path.is_dir():
        _damage_dir(path, how, outside)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "directory":
        path.unlink(missing_ok=True)
        path.mkdir()
        (path / "inside").write_text("{}")
    else:
        _damage_file(path, how, outside)


def _hashes(*folders: Path) -> dict[str, str]:
    found = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_symlink():
                found[str(p)] = "-> " + os.readlink(p)
            elif p.is_dir():
                found[str(p)] = "dir"
    return found


def _commands(runs: Path, run: Path, out: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """command -> (argv, paths inside the run it may write)."""
    return {
        "runs": (["runs", str(runs)], ()),
        "runs --json": (["runs", "--json", str(runs)], ()),
        "tips": (["tips", str(run)], ()),
        "report": (["report", str(run), "--out", str(out / "report.md")], ()),
        "export-csv": (["export-csv", str(run)], ()),
        "export-tb": (["export-tb", str(run)], ("tensorboard",)),
        "attach": (["attach", str(run)], ()),
        "stop": (["stop", str(run), "--wait", "0"], ("stop.request",)),
        "resume": (["train-dsr", "--resume", str(run), "--epochs", "2"], ("",)),
    }


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _run(argv: list[str]) -> tuple[int | str, str, str]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(COMMAND_SECONDS)
    try:
        with _quiet() as (out, err):
            try:
                code = main(argv)
            except _Hang:
                code = "hang"
            except BaseException as exc:   # noqa: BLE001 - the finding the corpus is for
                import traceback

                code = f"traceback: {type(exc).__name__}: {exc}"[:300]
                err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def _changed(before: dict, after: dict, run: Path, owned: tuple[str, ...]) -> list[str]:
    allowed = [str(run / name) for name in owned]
    return sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path)
                  and not any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed))


UNREADABLE = {"empty", "truncated", "binary", "invalid-utf8", "wrong-json-type", "huge", "directory"}


def _listing_problem(kind: str, how: str, out: str, err: str) -> str:
    """What is wrong with ``runs --json``'s answer for a run with ``kind`` damaged ``how`` ("" if nothing)."""
    rows = json.loads(out)
    if len(rows) != 1:
        return f"{len(rows)} rows listed, expected the one run"
    row = rows[0]
    unreadable = ((kind in ("status", "summary") and how in UNREADABLE)
                  or (kind, how) in (("status", "wrong-field-types"), ("metrics", "directory")))
    if unreadable and (row["state"] != "damaged" or FILE_KINDS[kind] not in row["problem"]):
        return f"listed as {row['state']!r} ({row['problem']!r}), expected damaged naming {FILE_KINDS[kind]}"
    if not unreadable and kind != "preset" and row["state"] == "damaged":
        return f"listed as damaged ({row['problem']}) for a file that is not key"
    return ""


def _warning_problem(kind: str, how: str, err: str) -> str:
    """``runs`` (the first command of a case: each warning is given once a process) names a damaged line."""
    if kind == "metrics" and how == "wrong-json-type" and "metrics.jsonl line 1: a JSON int, not an object" not in err:
        return "no warning naming metrics.jsonl and its line"
    return ""


def test_damage_corpus(base_run, tmp_path, monkeypatch):
    from workbench.cli import attach_cmd

    monkeypatch.setattr(attach_cmd, "POLL_SECONDS", 0.01)
    results, failures, started = Counter(), [], time.time()
    for kind in FILE_KINDS:
        for how in DAMAGES:
            case = tmp_path / f"{kind}-{how}"
            runs, outside, out = case / "runs", case / "outside", case / "out"
            run = runs / base_run.name
            shutil.copytree(base_run, run, symlinks=True)
            outside.mkdir()
            out.mkdir()
            damage(run, kind, how, outside)
            for name, (argv, owned) in _commands(runs, run, out).items():
                before = _hashes(runs, outside)
                code, out_text, err_text = _run(argv)
                text = out_text + err_text
                changed = _changed(before, _hashes(runs, outside), run, owned)
                wrong = (_listing_problem(kind, how, out_text, err_text) if name == "runs --json" and code == 0
                         else _warning_problem(kind, how, err_text) if name == "runs" else "")
                if code == 2 and os.environ.get("CORPUS_DEBUG"):
                    print(f"{kind} x {how} x {name}: {err_text.strip().splitlines()[-1][:150]}")
                ok = code in (0, 2) and "Traceback" not in text and not changed and not wrong
                results[(name, code if ok else "FAIL")] += 1
                if not ok:
                    failures.append(f"{kind} x {how} x {name}: exit {code}; changed {changed[:3]}; {wrong} "
                                    f"{text.strip()[-300:]}")
            shutil.rmtree(case)
    cases = len(FILE_KINDS) * len(DAMAGES)
    table = "\n".join(f"  {name:12} exit 0: {results[(name, 0)]:4}  exit 2: {results[(name, 2)]:4}  "
                      f"failed: {results[(name, 'FAIL')]:4}" for name in _commands(Path(), Path(), Path()))
    print(f"\ndamage corpus: {len(FILE_KINDS)} file kinds x {len(DAMAGES)} damages = {cases} damaged runs, "
          f"{sum(results.values())} command runs in {time.time() - started:.0f} s\n{table}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)


def test_the_damage_seen_in_issue_25_is_skipped_with_warnings_and_one_bad_run_hides_no_other(tmp_path, capsys):
    from run_factory import dsr_metrics, write_run

    preset = presets.load("cpu-demo")
    runs = tmp_path / "runs"
    sound = write_run(runs, "20260101-100000-cpu-demo-train-dsr", preset, "train-dsr",
                      metrics=dsr_metrics([23.0]), status={"state": "finished", "heartbeat": 0.0})
    typed = write_run(runs, "20260101-110000-cpu-demo-train-dsr", preset, "train-dsr",
                      metrics=dsr_metrics([24.0]), status={"state": "finished", "heartbeat": "abc", "pid": [1]})
    lines = write_run(runs, "20260101-120000-cpu-demo-train-dsr", preset, "train-dsr", metrics=dsr_metrics([25.0]))
    good = (lines / "metrics.jsonl").read_bytes()
    (lines / "metrics.jsonl").write_bytes(b'{"job": "\xff"}\n5\n{"step": "abc", "split": "val"}\n' + good)
    cut = write_run(runs, "20260101-130000-cpu-demo-evaluate", preset, "evaluate", summary={"rank1_dsr": 0.5})
    (cut / "summary.json").write_text('{"rank1_dsr": 0.')

    assert main(["runs", "--json", str(runs)]) == 0
    out, err = capsys.readouterr()
    rows = {row["name"]: row for row in json.loads(out)}
    assert len(rows) == 4
    assert rows[sound.name]["state"] == rows[typed.name]["state"] == "finished"
    assert rows[lines.name]["best_psnr"] == 25.0                          # the good records still count
    assert rows[cut.name]["state"] == "damaged" and rows[cut.name]["problem"].startswith("summary.json: not JSON")
    for number, why in ((1, "not UTF-8 text"), (2, "a JSON int, not an object"), (3, "field 'step' is \"abc\"")):
        assert f"{lines / 'metrics.jsonl'} line {number}: {why}" in err
    assert f"{typed / 'status.json'}: field 'heartbeat'" in err

    assert main(["runs", str(runs)]) == 0
    assert f"{cut.name}: summary.json: not JSON" in " ".join(capsys.readouterr().out.split())
    assert main(["export-csv", str(lines)]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 2                   # header + the two good records


def test_an_evaluation_s_curves_are_read_whole_and_only_damage_is_warned(tmp_path, capsys):
    """eval.json rows hold numbers and two curves (cmc, roc): both are kept without a warning (a pipeline read
    its folds' eval.json with eight warnings per fold); a damaged curve or metric is left out and warned."""
    from engine.runs.records import read_evaluation

    row = {"rank1": 0.8, "cmc": [0.8, 0.85, 0.9], "roc": {"far": [0.0, 0.01], "tar": [0.5, 0.9]}}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"dsr": row, "hr": {**row, "cmc": ["x"], "roc": {"far": "no"}, "rank5": "high"},
                                "protocol": {"distractors": 0}}))
    doc = read_evaluation(path)
    err = capsys.readouterr().err
    assert doc["dsr"] == row and doc["protocol"] == {"distractors": 0}
    assert doc["hr"] == {"rank1": 0.8}
    assert "dsr." not in err
    assert all(f"'hr.{key}' is" in err for key in ("cmc", "roc", "rank5"))
