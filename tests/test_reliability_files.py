"""Writes on full, read-only and unwritable disks; stale temp files; racing saves of one preset name."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine import presets
from engine.io import atomic
from engine.errors import PresetError, StorageError
from workbench.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def _in_tmpfs(tmp_path: Path, script: str, options: str = "size=64k") -> subprocess.CompletedProcess:
    """Run ``script`` (python; ``sys.argv[1]`` = the mount point) with a tiny tmpfs mounted in a private
    user+mount namespace (no root needed); skip where the platform does not allow it."""
    if shutil.which("unshare") is None or sys.platform != "linux":
        pytest.skip("needs Linux with unshare(1) to mount a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs '{mnt}'"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()[:200]}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLR_WORKBENCH_CONFIG_DIR": str(mnt / "config")}
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                           'mount -t tmpfs -o "$1" tmpfs "$2" && shift 2 && exec "$@"', "sh", options, str(mnt),
                           sys.executable, "-c", textwrap.dedent(script), str(mnt)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


FULL_DISK = """
    import os, sys, torch
    from pathlib import Path
    from engine.io import atomic
    from engine.errors import StorageError
    from workbench.cli.main import main
    mnt = Path(sys.argv[1])
    atomic.torch_save(mnt / "run" / "last.pt", {"w": torch.zeros(16)})
    before = (mnt / "run" / "last.pt").read_bytes()
    try:
        atomic.torch_save(mnt / "run" / "last.pt", {"w": torch.zeros(100_000)})  # 400 kB on a 64 kB disk
    except StorageError as exc:
        print("TORCH:", exc)
    assert (mnt / "run" / "last.pt").read_bytes() == before, "the earlier checkpoint changed"
    assert sorted(p.name for p in (mnt / "run").iterdir()) == ["last.pt"], "a temp file was left"
    with open(mnt / "filler", "wb", buffering=0) as f:  # fill the disk to the last byte
        for size in (4096, 1):
            try:
                while True:
                    f.write(b"x" * size)
            except OSError:
                pass
    print("EXIT:", main(["presets", "save-as", "cpu-demo", str(mnt / "mine.toml")]))
    print("LEFT:", sorted(p.name for p in mnt.iterdir()))
"""


def test_full_disk_is_a_clean_error_and_keeps_the_earlier_file(tmp_path):
    result = _in_tmpfs(tmp_path, FULL_DISK)
    assert result.returncode == 0, result.stderr
    out, err = result.stdout, result.stderr
    assert "Traceback" not in err
    torch_line = next(line for line in out.splitlines() if line.startswith("TORCH:"))
    assert "last.pt" in torch_line and "disk is full" in torch_line and "runs_dir" in torch_line
    assert "EXIT: 2" in out
    assert "mine.toml" in err and "disk is full" in err
    assert "LEFT: ['filler', 'run']" in out  # neither mine.toml nor a temp file


READ_ONLY = """
    import sys
    from pathlib import Path
    from workbench.cli.main import main
    mnt = Path(sys.argv[1])
    print("EXIT:", main(["presets", "save-as", "cpu-demo", str(mnt / "mine.toml")]))
"""


def test_read_only_file_system_is_a_clean_error(tmp_path):
    result = _in_tmpfs(tmp_path, READ_ONLY, options="size=64k,ro")
    assert "Traceback" not in result.stderr
    assert "EXIT: 2" in result.stdout
    assert "mine.toml" in result.stderr and "read-only" in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_is_a_clean_error(tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "old.toml").write_text("x = 1\n")
    folder.chmod(0o555)
    try:
        assert main(["presets", "save-as", "cpu-demo", str(folder / "mine.toml")]) == 2
        err = capsys.readouterr().err
        assert "mine.toml" in err and "permission denied" in err
        assert sorted(p.name for p in folder.iterdir()) == ["old.toml"]
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_storage_errors_while_writing_keep_the_old_file_and_leave_no_temp(tmp_path, monkeypatch, code, words):
    """The same faults injected in-process (fsync fails): works on every platform and as root."""
    target = atomic.write_text(tmp_path / "summary.json", "old")

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(StorageError) as err:
        atomic.write_text(target, "new")
    assert str(target) in str(err.value) and words in str(err.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_torch_stream_writer_failure_is_a_storage_error(tmp_path):
    """torch.save's own error text ("enforce fail at inline_container.cc") is recognised."""
    exc = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    error = atomic.storage_error(exc, tmp_path / "last.pt")
    assert isinstance(error, StorageError) and "last.pt" in str(error) and "runs_dir" in str(error)
    assert atomic.storage_error(RuntimeError("shape mismatch"), tmp_path / "x") is None


def test_a_file_where_a_directory_is_needed_is_named(tmp_path):
    (tmp_path / "runs").write_text("")
    with pytest.raises(StorageError, match="not a directory"):
        atomic.write_text(tmp_path / "runs" / "a" / "summary.json", "{}")


def test_remove_stale_temps_clears_only_the_writers_leftovers(tmp_path):
    keep = ["last.pt", "best.pt", ".hidden", "notes.tmp", ".x.tmp"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    stale = [".last.pt.k2j3h4_a.tmp", ".summary.json.abcdefgh.tmp", ".metrics.jsonl.Q1w2E3r4.tmp"]
    for name in stale:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    (tmp_path / ".sub.12345678.tmp").mkdir()  # a folder of that shape is not a temp file
    removed = atomic.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [".sub.12345678.tmp"])
    assert atomic.remove_stale_temps(tmp_path / "missing") == []


def test_a_killed_writer_leaves_a_temp_file_that_remove_stale_temps_matches(tmp_path, monkeypatch):
    """The pattern matches the names atomic.py really creates (a writer dying before its rename)."""
    def killed(src, dst):
        raise SystemExit("killed")  # BaseException: the temp file is cleaned in-process, so re-create it

    names = []
    real_open_temp = atomic.open_temp

    def recording_open_temp(*args, **kwargs):
        fd, name = real_open_temp(*args, **kwargs)
        names.append(name)
        return fd, name

    monkeypatch.setattr(atomic, "open_temp", recording_open_temp)
    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(SystemExit):
        atomic.write_bytes(tmp_path / "last.pt", b"data")
    Path(names[0]).write_bytes(b"data")  # what SIGKILL would have left
    assert atomic.remove_stale_temps(tmp_path) == [Path(names[0])]


def test_exclusive_save_lets_exactly_one_of_four_threads_win(tmp_path):
    """50 tries x 4 threads saving the same new name without --force: exactly one succeeds each time."""
    preset = presets.load("cpu-demo")
    for attempt in range(50):
        dest = tmp_path / f"race{attempt}.toml"
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def save(index: int) -> None:
            changed = preset.with_changes({"runtime.seed": index})
            barrier.wait()
            try:
                presets.save(changed, dest)
                outcomes.append(f"ok{index}")
            except PresetError as exc:
                assert "already exists" in str(exc)
                outcomes.append("exists")

        threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o.startswith("ok")]
        assert len(winners) == 1, (attempt, outcomes)
        assert presets.load(dest).runtime.seed == int(winners[0][2:])  # the file is the winner's, complete
    assert not list(tmp_path.glob(".*.tmp"))


def test_save_refuses_unsafe_names_and_keeps_force(tmp_path):
    preset = presets.load("cpu-demo")
    for bad in ("a b", "x" * 65, ".hidden", "-x", "a\tb"):
        with pytest.raises(PresetError, match="not a valid preset name"):
            presets.save(preset, bad)
    path = presets.save(preset, "mine")
    time.sleep(0.01)
    presets.save(preset.with_changes({"runtime.seed": 7}), "mine", overwrite=True)
    assert presets.load(path).runtime.seed == 7 and presets.load(path).name == "mine"
    odd = presets.save(preset, tmp_path / "my preset!.toml")  # a path: its stem becomes a safe name
    assert presets.load(odd).name == "my-preset"
