"""What ``--resume`` reads and checks: the run's own preset and last.pt, its random state, and the data it
trained on (a fingerprint, so a resume on other images is refused unless asked for)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.errors import WorkbenchError
from engine.io.checkpoints import load_checkpoint
from engine.presets import Preset
from engine.presets import load as load_preset
from engine.events import Log
from engine.runs.run_dir import RunDir, holds_run
from engine.runs.status import run_state
from engine.train.loop_state import LoopState


@dataclass
class Resume:
    """A run directory to continue: its preset, its last.pt, and where it stood."""
    run: RunDir
    preset: Preset
    checkpoint: dict[str, Any]

    @property
    def state(self) -> LoopState:
        return LoopState.from_dict(self.checkpoint["loop"])


def open_resume(request, opts, job: str, emit) -> tuple[Resume | None, Any, Preset]:
    """(the Resume, the options, the preset) of a job given ``opts.resume``, else (None, opts, the request's).

    A run of ``job`` killed before its first last.pt restarts in place from its own preset.toml (as BasicSR's
    auto-resume does), saying so: the options then name it as ``run_dir`` and its records are cleared.
    """
    if not opts.resume:
        return None, opts, request.preset
    run = RunDir.open(opts.resume)
    if (run.path / "last.pt").exists() or holds_run(run.path, job) or run_state(run.path) == "running":
        resume = read_resume(run.path, job)
        return resume, opts, resume.preset
    run.check_own_files()
    preset = load_preset(run.path / "preset.toml")
    run.truncate_metrics(-1)   # the killed attempt's records (it restarts from its first step)
    emit(Log(job, f"{run.path} was stopped before its first checkpoint (no last.pt): restarting it in place from "
                  "its own preset.toml"))
    return None, replace(opts, resume=None, run_dir=str(run.path)), preset


def read_resume(run_dir: str | Path, job: str) -> Resume:
    """Open a run directory for ``--resume``: its own preset.toml and a resumable last.pt of ``job``."""
    run = RunDir.open(run_dir)
    run.check_own_files()
    last = run.path / "last.pt"
    if not last.is_file():
        raise WorkbenchError(f"cannot resume {run.path}: it has no last.pt (the run ended before its first "
                             f"checkpoint). Start a new run instead: `vlr-workbench {job} --preset P`.")
    checkpoint = load_checkpoint(last, what=f"the last.pt of {job} run {run.path}")
    if checkpoint.get("job") != job or "loop" not in checkpoint:
        raise WorkbenchError(f"{last} is not a resumable {job} checkpoint (it belongs to "
                             f"{checkpoint.get('job') or 'an older version'}). Give the run directory of a {job} run "
                             f"to `vlr-workbench {job} --resume`.")
    return Resume(run, load_preset(run.path / "preset.toml"), checkpoint)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {"generator": generator.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def data_record(root: Path | str, train) -> dict[str, Any]:
    """What last.pt records of the training data: root, image count and a fingerprint (the sorted file
    names and image shape: stable across processes, and a copied dataset still matches)."""
    import hashlib

    digest = hashlib.sha1(repr((sorted(train.names), tuple(train.hr.shape))).encode())
    return {"root": str(root), "images": len(train), "fingerprint": digest.hexdigest()[:16]}


def resume_data_root(resume: Resume | None, given: str | None) -> str | None:
    """The data root of a job: the one given, else the resumed run's recorded root, else None (the preset's)."""
    if given or resume is None:
        return given
    return resume.checkpoint.get("data", {}).get("root")


def check_resume_data(resume: Resume | None, record: dict[str, Any], allow_other: bool) -> None:
    """Refuse to resume on data other than the run's own unless told (``--allow-other-data``)."""
    if resume is None:
        return
    recorded = resume.checkpoint.get("data") or {}
    if recorded.get("fingerprint") and recorded["fingerprint"] != record["fingerprint"] and not allow_other:
        raise WorkbenchError(
            f"{resume.run.path} was trained on {recorded.get('root')} ({recorded.get('images')} training images), "
            f"but this resume would use {record['root']} ({record['images']} training images), which differs. "
            "Leave out --data to continue on the run's own data, or pass --allow-other-data to continue on "
            "these images on purpose.")
