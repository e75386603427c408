"""Issue 25, loose ends: a killed ``prepare`` leaves ``.DST.*.partial``, a killed first decode leaves a cache
``.tmp``; the next run clears them, never those of a live writer (the pid in their names says whose they are).

Each writer runs in a subprocess that blocks mid-way (a patched function waits forever once it has started
writing), is SIGKILLed once the leftover is on disk (condition-waited), then the next run goes in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image

from engine.data import disk_cache
from engine.data.demo import generate_demo_dataset
from engine.data.pairs import clear_cache, load_split
from engine.io.atomic import make_temp_dir
from workbench.cli.main import main

from waiting import wait_until

REPO = Path(__file__).resolve().parents[1]


def _blocked_process(tmp_path: Path, patch: str, call: str) -> tuple[subprocess.Popen, Path]:
    """A Python process that runs ``call`` with ``patch`` applied; the patched function touches ``reached`` and
    blocks on its second call."""
    reached = tmp_path / "reached"
    script = textwrap.dedent(f"""
        import threading
        from pathlib import Path
        calls = []
        def blocking(original):
            def wrapper(*args, **kwargs):
                calls.append(1)
                if len(calls) == 2:
                    Path({str(reached)!r}).write_text("x")
                    threading.Event().wait()
                return original(*args, **kwargs)
            return wrapper
        {patch}
        {call}
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL), reached


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _photos(src: Path) -> Path:
    for subject in ("alice", "bob", "carol"):
        (src / subject).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), (40 * i, 90, 120)).save(src / subject / f"{i}.png")
    return src


def test_the_next_prepare_clears_a_killed_prepares_partial_folder_but_not_a_live_ones(tmp_path, capsys):
    src, dst = _photos(tmp_path / "photos"), tmp_path / "faces"
    argv = ["prepare", str(src), str(dst), "--vlr", "8x8"]
    proc, reached = _blocked_process(
        tmp_path, "import engine.data.prepare as p; p.load_rgb = blocking(p.load_rgb)",
        f"from workbench.cli.main import main; main({argv!r})")
    try:
        wait_until(lambda: reached.exists() and any(tmp_path.glob(".faces.*.partial/**/*.png")),
                   "the prepare to be writing")
        partials = list(tmp_path.glob(".faces.*.partial"))
        assert len(partials) == 1 and any(partials[0].rglob("*.png")), partials
    finally:
        _kill(proc)
    live = make_temp_dir(dst)                      # a prepare of this (living) process, still writing
    assert main(argv) == 0, capsys.readouterr()
    assert (dst / "manifest.json").is_file()
    assert sorted(tmp_path.glob(".faces.*.partial")) == [live]     # the killed one's gone, the live one's kept


def test_the_next_build_clears_a_killed_first_decodes_cache_temp(tmp_path, monkeypatch):
    monkeypatch.setenv(disk_cache.DISABLE_ENV, "1")
    root = generate_demo_dataset(tmp_path / "data", identities=4, per_identity=4, seed=0, vlr_size=(8, 8),
                                 hr_size=32)
    proc, reached = _blocked_process(
        tmp_path, "import engine.data.pairs as p; p._decode = blocking(p._decode)",
        f"from engine.data.pairs import load_split; load_split({str(root)!r}, 'train', (8, 8), 32)")
    try:
        wait_until(lambda: reached.exists(), "the first decode to be writing")
        temps = list(disk_cache.decoded_dir().rglob(".*.tmp"))
        assert len(temps) == 1, temps
    finally:
        _kill(proc)
    clear_cache()
    split = load_split(root, "train", (8, 8), 32)
    assert len(split) > 0
    slot = temps[0].parent
    assert not list(slot.glob(".*.tmp")) and (slot / "manifest.json").is_file()
