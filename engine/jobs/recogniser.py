"""Which recogniser a job freezes or starts from, and loading it.

``recogniser_weights``: the preset's ``runtime.edgeface_weights``, else the ``best.pt`` of the
latest *finished* pretrain run of the preset (a stopped, failed or still running one is never
reused), else a pre-training run made now when ``finetune.pretrain_epochs > 0`` (the demo path).

A job that was given its run directory (``--run-dir``: the app's own-process jobs) says in that
run's status that it is pre-training and where (``stage_run``), so whoever follows the run follows
the pre-training run meanwhile, and a stop request in the run reaches the pre-training.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from engine import distributed
from engine.distributed import SINGLE, Context
from engine.errors import JobStopped, WeightsError
from engine.events import Emit, Log, ignore
from engine.jobs.registry import StopFlag
from engine.models.edgeface import OBTAIN_WEIGHTS
from engine.presets import Preset
from engine.runs.status import FileStop, StatusWriter, run_state
from engine.runs.run_dir import RunDir, iter_runs, run_matches

PRETRAIN = "pretrain"


def latest_finished_pretrain(runs_dir: str | Path, preset_name: str) -> tuple[Path | None, list[str]]:
    """(the newest finished pretrain run of the preset, notes on newer runs passed over)."""
    passed = []
    for path in iter_runs(runs_dir):
        if not run_matches(path, preset_name, PRETRAIN) or not (path / "best.pt").is_file():
            continue
        state = run_state(path)
        if state == "finished":
            return path, passed
        passed.append(f"{path.name} ({state})")
    return None, passed


def preset_weights(preset: Preset) -> Path | None:
    """``runtime.edgeface_weights`` as a path (None when empty); a WeightsError naming the key, the preset and
    the path (relative paths are read from the working directory) when it is not a file."""
    value = preset.runtime.edgeface_weights
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path
    state = "is a folder, not a file" if path.is_dir() else "does not exist"
    relative = "" if path.is_absolute() else f" (a relative path is read from the working directory {Path.cwd()})"
    raise WeightsError(f"runtime.edgeface_weights of preset {preset.name} is {value!r}, but {path.absolute()} "
                       f"{state}{relative}. Put the EdgeFace weights file there, pass --edgeface PATH, or save a "
                       f"preset that names it: `vlr-workbench presets save-as {preset.name} my-{preset.name} --set "
                       f"runtime.edgeface_weights=PATH`. {OBTAIN_WEIGHTS}")


def existing_recogniser(preset: Preset, data_root: Path | str, emit: Emit) -> Path | None:
    """The preset's weights file, else the latest finished pretrain run's best.pt, else None."""
    rt = preset.runtime
    if rt.edgeface_weights:
        return preset_weights(preset)
    previous, passed = latest_finished_pretrain(rt.runs_dir, preset.name)
    if passed:
        emit(Log(PRETRAIN, f"not reusing unfinished pretrain run(s) {', '.join(passed[:3])}: only a finished run's "
                           "best.pt is used as the recogniser", "warning"))
    if previous is None:
        return None
    emit(Log(PRETRAIN, f"recogniser: {previous / 'best.pt'} (latest finished pretrain run of preset {preset.name})"))
    trained_on = RunDir(previous).read_summary().get("data_root")
    if trained_on and Path(trained_on).resolve() != Path(data_root).resolve():
        emit(Log(PRETRAIN, f"that recogniser was pre-trained on {trained_on}, not on {data_root}; run "
                           "`vlr-workbench pretrain` to pre-train one on this dataset", "warning"))
    return previous / "best.pt"


def pretrain_epochs(preset: Preset) -> int:
    """finetune.pretrain_epochs, or the error that says how to get a recogniser when it is 0."""
    epochs = preset.finetune.pretrain_epochs
    if epochs <= 0:
        raise WeightsError(f"preset {preset.name} names no EdgeFace weights (runtime.edgeface_weights is empty), "
                           f"no finished pretrain run of it exists under {preset.runtime.runs_dir}, and "
                           "finetune.pretrain_epochs is 0. Either set runtime.edgeface_weights to a pretrained file "
                           f"(or pass --edgeface): {OBTAIN_WEIGHTS} Or set finetune.pretrain_epochs > 0 to pre-train "
                           "a recogniser on the HR training images first (`vlr-workbench pretrain --preset P`).")
    return epochs


def recogniser_weights(preset: Preset, data_root: Path | str, emit: Emit, stop: StopFlag,
                       ctx: Context = SINGLE, host: tuple[str | Path, str] | None = None) -> Path:
    """The recogniser weights a job should use (see the module docstring).

    A stop request during an on-demand pre-training raises :class:`JobStopped` to the calling job,
    after saying how to resume that pre-training run. Under torchrun every rank gets rank 0's answer.
    ``host``: (the calling job's run directory, its job) when it was given one: its status names the
    pre-training run meanwhile, and ends as stopped or failed with it.
    """
    say = emit if ctx.is_main else ignore
    found = existing_recogniser(preset, data_root, say)
    found = distributed.broadcast(str(found) if found else None, ctx)   # rank 0's choice on every rank
    if found is not None:
        return Path(found)
    epochs = pretrain_epochs(preset)
    from engine.runtime import resolve
    from engine.train.pretrain import pretrain

    say(Log(PRETRAIN, f"no EdgeFace weights given: pre-training {preset.runtime.edgeface_variant} on HR images for "
                      f"{epochs} epochs (finetune.pretrain_epochs)"))
    runtime = resolve(preset)
    _, device = distributed.setup(runtime.device)
    run_dir = distributed.broadcast(str(RunDir.create(preset.runtime.runs_dir, preset, PRETRAIN).path)
                                    if ctx.is_main else None, ctx)
    status = StatusWriter(host[0], host[1], enabled=ctx.is_main) if host else None
    if status is not None:
        status.update(force=True, stage=PRETRAIN, stage_run=run_dir)
        stop = FileStop(stop, host[0])         # x on the followed run stops the pre-training
    try:
        result = pretrain(preset, Path(data_root), epochs, emit, stop, ctx, replace(runtime, device=device),
                          run_dir=run_dir)
    except BaseException as exc:
        if status is not None:
            status.end("failed", f"the recogniser pre-training failed: {exc}")
        raise
    if result.stopped:
        note = (f"stopped during the recogniser pre-training; `vlr-workbench pretrain --resume {result.run_dir}` "
                "finishes it, then start this job again")
        if status is not None:
            status.end("stopped", note)
        say(Log(PRETRAIN, note, "warning"))
        raise JobStopped()
    if status is not None:
        status.hand_over()                     # the job's own status takes over (no final state written)
    return Path(result.run_dir) / "best.pt"


def load_frozen_recogniser(path: str | Path, emit: Emit, job: str) -> torch.nn.Module:
    """The recogniser file as a frozen module (the identity and feature-matching losses' reference)."""
    from engine.models.edgeface import load_edgeface

    recogniser = load_edgeface(path)
    emit(Log(job, f"frozen recogniser {recogniser.variant} from {path}"))
    return recogniser
