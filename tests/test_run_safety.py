"""Issue 25: run directories are untrusted input; nothing we write lands on what we did not create."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine import presets
from engine.errors import WorkbenchError
from engine.runs.run_dir import RunDir
from workbench.cli.main import main

from run_factory import dsr_metrics, write_run
from tiny import tiny_dsr_data, tiny_dsr_preset


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tiny_dsr_data(tmp_path_factory.mktemp("safety") / "data", identities=6, per_identity=4)


@pytest.fixture
def tiny_preset_file(tmp_path):
    preset = tiny_dsr_preset(tmp_path / "runs")
    return presets.save(preset, tmp_path / "tiny.toml")


@pytest.mark.parametrize("job", ["evaluate", "pipeline"])
def test_train_dsr_refuses_a_run_dir_holding_another_run(job, tiny_root, tiny_preset_file, tmp_path, capsys):
    existing = write_run(tmp_path / "runs", f"20260101-100000-cpu-demo-{job}", presets.load("cpu-demo"), job,
                         metrics=[{"stage": job, "epoch": 0, "step": 0, "split": "test", "rank1": 0.5}],
                         status={"state": "finished", "heartbeat": 0.0}, summary={"rank1": 0.5},
                         evaluation={"rows": []} if job == "evaluate" else None)
    before = _tree_hash(existing)
    code = main(["train-dsr", "--preset", str(tiny_preset_file), "--data", str(tiny_root), "--epochs", "1",
                 "--run-dir", str(existing)])
    out = "".join(capsys.readouterr())
    assert code == 2, out
    assert "already holds" in out and str(existing) in out and "Traceback" not in out
    assert _tree_hash(existing) == before


def test_a_directory_with_only_a_preset_is_not_a_run_yet(tmp_path):
    """The app's own-process start, the pipeline's stage dirs and a pre-training dir are made with preset.toml
    (and maybe detached.log) before the job is given them as --run-dir."""
    preset = presets.load("cpu-demo")
    made = RunDir.create(tmp_path / "runs", preset, "train-dsr")
    (made.path / "detached.log").write_text("starting\n")
    assert RunDir.for_job(preset, "train-dsr", made.path).path == made.path
    other = write_run(tmp_path / "runs", "x-evaluate", preset, "evaluate", summary={"rank1": 0.5})
    with pytest.raises(WorkbenchError, match="already holds"):
        RunDir.for_job(preset, "train-dsr", other)
    dead = write_run(tmp_path / "runs", "x-train-dsr", preset, "train-dsr",   # killed before its first last.pt
                     metrics=dsr_metrics([20.0]), status={"state": "running", "heartbeat": 0.0, "pid": 1})
    assert RunDir.for_job(preset, "train-dsr", dead).path == dead          # restarted in place, as before
    with pytest.raises(WorkbenchError, match="already holds"):
        RunDir.for_job(preset, "finetune", dead)                           # but never by another job


def test_runs_dir_expands_home_and_refuses_the_filesystem_root(tmp_path, monkeypatch):
    from engine.errors import PresetError
    from engine.runs.run_dir import iter_runs, runs_root

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    preset = presets.load("cpu-demo").with_changes({"runtime.runs_dir": "~/x"})
    run = RunDir.create(preset.runtime.runs_dir, preset, "train-dsr")
    assert run.path.parent == tmp_path / "home" / "x"
    assert not (tmp_path / "~").exists()                            # no literal ./~ folder
    assert list(iter_runs("~/x")) == [run.path]
    for root in ("/", "//", "/.", "/etc/.."):
        with pytest.raises(PresetError, match="runtime.runs_dir"):
            presets.load("cpu-demo").with_changes({"runtime.runs_dir": root})
        with pytest.raises(WorkbenchError, match="runtime.runs_dir"):
            runs_root(root)


def test_cli_refuses_runs_dir_root(tiny_root, tmp_path, capsys):
    preset_file = tmp_path / "root.toml"
    preset_file.write_text(Path(presets.save(presets.load("cpu-demo"), tmp_path / "base.toml")).read_text()
                           .replace('runs_dir = "runs"', 'runs_dir = "/"'))
    assert 'runs_dir = "/"' in preset_file.read_text()
    code = main(["train-dsr", "--preset", str(preset_file), "--data", str(tiny_root), "--epochs", "1"])
    out = "".join(capsys.readouterr())
    assert code == 2 and "runtime.runs_dir" in out and "Traceback" not in out


@pytest.mark.parametrize("damage", ['{"step": "abc", "job": "train-dsr"}\n', "5\n"])
def test_a_resume_that_cannot_start_leaves_the_run_as_it_was(damage, tiny_root, tiny_preset_file, tmp_path, capsys):
    from engine.runs.status import run_state

    run = tmp_path / "run"
    assert main(["train-dsr", "--preset", str(tiny_preset_file), "--data", str(tiny_root), "--epochs", "1",
                 "--run-dir", str(run)]) == 0
    assert run_state(run) == "finished"
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(damage)
    before = _tree_hash(run)
    capsys.readouterr()
    code = main(["train-dsr", "--resume", str(run), "--epochs", "2"])
    out = "".join(capsys.readouterr())
    assert "Traceback" not in out, out
    assert code == 2 and "metrics.jsonl" in out, out
    assert run_state(run) == "finished"                       # not "running", then "dead"
    assert _tree_hash(run) == before                          # status.json included: exactly as it was


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that says it is width x height (a few hundred bytes on disk, like a real compressed bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [30000, 12000])
def test_prepare_refuses_an_image_over_the_pixel_limit_without_decoding_it(side, tmp_path, capsys):
    from PIL import Image

    src = tmp_path / "photos"
    for subject in ("alice", "bob", "carol"):
        (src / subject).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (40 * i, 90, 120)).save(src / subject / f"{i}.png")
    bomb = src / "bob" / "huge.png"
    _png_header_only(bomb, side, side)
    code = main(["prepare", str(src), str(tmp_path / "out"), "--vlr", "8x8"])
    out = "".join(capsys.readouterr())
    assert code == 2, out
    assert str(bomb) in out and f"{side}x{side}" in out and "pixels" in out
    assert "Traceback" not in out and "DecompressionBomb" not in out
    assert not (tmp_path / "out").exists()


def _photos(src: Path) -> Path:
    from PIL import Image

    for subject in ("alice", "bob", "carol"):
        (src / subject).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (40 * i, 90, 120)).save(src / subject / f"{i}.png")
    return src


def test_prepare_into_a_link_to_an_empty_folder_writes_there(tmp_path, capsys):
    src = _photos(tmp_path / "photos")
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(["prepare", str(src), str(link), "--vlr", "8x8"]) == 0
    assert json.loads((link / "manifest.json").read_text())["vlr_size"] == [8, 8]   # on disk, through the link
    assert link.is_symlink() and (target / "manifest.json").is_file()


def test_a_dataset_written_meanwhile_is_reported_not_silently_kept(tmp_path):
    from engine.data.writer import staged_dir
    from engine.errors import DataError

    dst = tmp_path / "data"
    with pytest.raises(DataError, match=r"16x16") as caught:
        with staged_dir(dst) as tmp:
            (tmp / "manifest.json").write_text(json.dumps({"vlr_size": [32, 32]}))
            dst.mkdir()                                              # another prepare finished first
            (dst / "manifest.json").write_text(json.dumps({"vlr_size": [16, 16]}))
    assert str(dst) in str(caught.value) and "not saved" in str(caught.value)
    assert json.loads((dst / "manifest.json").read_text())["vlr_size"] == [16, 16]


@pytest.mark.parametrize("pid", ["abc", [1], -5, 10 ** 30, True])
def test_a_garbage_pid_is_dead_once_the_heartbeat_is_stale(pid, tmp_path):
    import os
    import socket
    import time

    from engine.runs.status import STALE_SECONDS, RunLock, run_state

    run = write_run(tmp_path / "runs", "x-train-dsr", presets.load("cpu-demo"), "train-dsr",
                    status={"state": "running", "pid": pid, "heartbeat": time.time() - 10 * STALE_SECONDS})
    assert run_state(run) == "dead"
    fresh = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**fresh, "heartbeat": time.time()}))
    assert run_state(run) == "running"                      # a fresh heartbeat: still trusted
    (run / "status.json").write_text(json.dumps(fresh))      # stale again
    lock = run / "owner.lock"
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "time": time.time() - 1000}))
    old = time.time() - 10 * STALE_SECONDS
    os.utime(lock, (old, old))
    assert "took over" in RunLock(run).acquire()            # not refused forever


def test_a_stop_at_the_moment_a_run_finishes_leaves_no_stop_request(tmp_path):
    from engine.runs.status import STOP_FILE, StatusWriter, request_stop, run_state

    run = write_run(tmp_path / "runs", "x-train-dsr", presets.load("cpu-demo"), "train-dsr")
    writer = StatusWriter(run, "train-dsr")
    request_stop(run)                       # asked while it runs ...
    writer.end("finished")                  # ... and it finished before its next step
    assert run_state(run) == "finished" and not (run / STOP_FILE).exists()
    request_stop(run)                       # asked just after it finished (the check said "running")
    assert not (run / STOP_FILE).exists()


def test_one_destination_one_dataset_unless_force(tmp_path, capsys):
    src = _photos(tmp_path / "photos")
    dst = tmp_path / "data"
    assert main(["prepare", str(src), str(dst), "--vlr", "16x16"]) == 0
    capsys.readouterr()
    assert main(["prepare", str(src), str(dst), "--vlr", "32x32"]) == 2
    out = "".join(capsys.readouterr())
    assert "VLR 16x16" in out and "--force" in out                  # what is really on disk
    assert json.loads((dst / "manifest.json").read_text())["vlr_size"] == [16, 16]
    assert main(["prepare", str(src), str(dst), "--vlr", "32x32", "--force"]) == 0
    assert json.loads((dst / "manifest.json").read_text())["vlr_size"] == [32, 32]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # nothing left aside
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("not a dataset")
    assert main(["prepare", str(src), str(other), "--vlr", "16x16", "--force"]) == 2   # never replaces other files
    assert (other / "mine.txt").read_text() == "not a dataset"


def test_resume_of_a_run_killed_before_its_first_checkpoint_restarts_it_in_place(tiny_root, tiny_preset_file,
                                                                               tmp_path, capsys):
    """Issue 25: it said "start a new run"; now it restarts in place from its own preset.toml, saying so."""
    from run_factory import gone_pid

    from engine.runs.records import read_metrics
    from engine.runs.status import run_state

    preset = presets.load(tiny_preset_file).with_changes({"dsr.learning_rate": 7e-4})   # the run's own
    run = write_run(tmp_path / "runs", "20260101-100000-tiny-train-dsr", preset, "train-dsr",
                    metrics=[{"stage": "dsr", "epoch": 1, "step": 3, "split": "train", "loss": 99.0}],
                    status={"state": "running", "pid": gone_pid(), "heartbeat": 0.0})
    assert run_state(run) == "dead" and not (run / "last.pt").exists()
    code = main(["train-dsr", "--resume", str(run), "--data", str(tiny_root), "--epochs", "1"])
    out = "".join(capsys.readouterr())
    assert code == 0, out
    assert "restarting it in place from its own preset.toml" in " ".join(out.split())
    assert run_state(run) == "finished" and (run / "last.pt").is_file()
    assert presets.load(run / "preset.toml").dsr.learning_rate == 7e-4
    assert all(r.get("loss") != 99.0 for r in read_metrics(run))        # the killed attempt's records went
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]    # no second run directory
