"""Files of runs, presets, reports and datasets get the user's umask (0644 under umask 022), not mkstemp's 0600,
so that colleagues on a shared server can read them; replacing a file keeps its mode."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from engine import presets
from engine.io import atomic
from run_factory import make_runs
from workbench.cli.main import main
from tiny import tiny_dsr_data, tiny_dsr_preset



@pytest.fixture
def umask_022():
    """The usual umask of a shared server, restored afterwards."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): mode(p) for p in [folder, *folder.rglob("*")]}


def expected(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): 0o755 if p.is_dir() else 0o644 for p in [folder, *folder.rglob("*")]}


def test_a_train_dsr_run_and_its_dataset_are_readable_by_others(tmp_path, umask_022, capsys):
    root = tiny_dsr_data(tmp_path / "data", identities=12, per_identity=6)
    assert modes_under(root) == expected(root)        # the staged dataset folder is not mkdtemp's 0700
    preset = tiny_dsr_preset(tmp_path / "runs")
    preset_file = presets.save(preset, tmp_path / "tiny.toml")
    assert mode(preset_file) == 0o644
    run_dir = tmp_path / "run"
    code = main(["train-dsr", "--preset", str(preset_file), "--data", str(root), "--epochs", "2",
                 "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().out
    written = modes_under(run_dir)
    assert {"summary.json", "preset.toml", "best.pt", "last.pt", "metrics.jsonl"} <= set(written)
    assert any(name.startswith("samples") and name.endswith(".png") for name in written)
    assert written == expected(run_dir)


def test_preset_save_as_and_force_keep_the_mode_of_the_file(umask_022, capsys):
    assert main(["presets", "save-as", "cpu-demo", "mine", "--set", "dsr.epochs=3"]) == 0
    path = presets.user_dir() / "mine.toml"
    assert mode(path) == 0o644
    path.chmod(0o640)                                  # the user chose who may read it
    os.umask(0o077)                                    # the umask applies to new files only
    assert main(["presets", "save-as", "cpu-demo", "mine", "--set", "dsr.epochs=4", "--force"]) == 0
    assert mode(path) == 0o640 and presets.load("mine").dsr.epochs == 4
    assert main(["presets", "save-as", "cpu-demo", "other"]) == 0
    assert mode(presets.user_dir() / "other.toml") == 0o600


@pytest.mark.parametrize("html", [True, False])
def test_reports_are_readable_by_others(tmp_path, umask_022, capsys, html):
    evaluate = make_runs(tmp_path / "runs")["evaluate"]
    assert main(["report", str(evaluate), *(["--html"] if html else [])]) == 0
    report = evaluate / ("report.html" if html else "report.md")
    assert mode(report) == 0o644
    if not html:
        assert modes_under(evaluate / "report_files") == expected(evaluate / "report_files")
        assert {"cmc.png"} <= set(os.listdir(evaluate / "report_files"))


def test_concurrent_writers_in_threads_all_get_the_umask_mode(tmp_path, umask_022):
    """The umask is applied by the kernel at creation, never read by setting it (os.umask is process-wide)."""
    barrier = threading.Barrier(4)

    def write(index: int) -> None:
        barrier.wait()
        for n in range(20):
            atomic.write_json(tmp_path / f"t{index}-{n}.json", {"n": n})
            atomic.create_exclusive(tmp_path / f"x{index}-{n}.bin", b"x")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(os.listdir(tmp_path)) == 160
    assert {mode(p) for p in tmp_path.iterdir()} == {0o644}


def test_save_as_force_keeps_the_mode_and_writes_through_a_symlinked_preset(tmp_path, monkeypatch, capsys):
    """Issue 25: `save-as --force` over a preset reset its mode and replaced a symlinked preset by a file."""
    from workbench.cli.main import main

    monkeypatch.chdir(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    target = presets.save(presets.load("cpu-demo"), shared / "team.toml")
    os.chmod(target, 0o640)
    link = presets.user_dir() / "team.toml"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    assert main(["presets", "save-as", "cpu-demo", "team", "--force", "--set", "dsr.epochs=7"]) == 0, capsys.readouterr()
    assert link.is_symlink() and link.resolve() == target.resolve()        # the link stays, the file it names changed
    assert presets.load(target).dsr.epochs == 7 and presets.load("team").dsr.epochs == 7
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert [p.name for p in link.parent.iterdir()] == ["team.toml"]        # no stray file beside the link
