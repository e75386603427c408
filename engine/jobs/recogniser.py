"""Which recogniser a job freezes or starts from, and loading it.

``recogniser_weights``: the preset's ``runtime.edgeface_weights``, else the ``best.pt`` of the
latest *finished* pretrain run made with the preset's recogniser settings (:data:`RECOGNISER_KEYS`:
whatever its preset's name) on the same data root (a stopped, failed or still running one is never
reused), else a pre-training run made now when ``finetune.pretrain_epochs > 0`` (the demo path).

A job that was given its run directory (``--run-dir``: the app's own-process jobs) says in that
run's status that it is pre-training and where (``stage_run``), so whoever follows the run follows
the pre-training run meanwhile, and a stop request in the run reaches the pre-training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
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


# The preset keys that shape a pre-trained recogniser (engine.train.pretrain and the ArcFace loop it runs); a
# finished pretrain run of any preset with equal values on the same data root serves as the recogniser.
RECOGNISER_KEYS = (
    "runtime.edgeface_variant", "runtime.seed", "data.hr_size", "finetune.pretrain_epochs", "finetune.pretrain_lr",
    "finetune.batch_size", "finetune.weight_decay", "finetune.arcface_scale", "finetune.arcface_margin",
    "finetune.label_smoothing", "finetune.early_stop_patience", "finetune.flip_p", "finetune.jitter_brightness",
    "finetune.jitter_contrast", "finetune.jitter_saturation", "finetune.jitter_hue", "finetune.rotation_degrees")
_PRETRAIN_RUN = re.compile(rf"-{PRETRAIN}(-\d+)?$")


@dataclass
class PretrainLookup:
    """The newest finished pretrain run with a preset's recogniser settings on its data, and runs passed over:
    ``unfinished`` ones with those settings, and the preset's own runs made with ``other`` settings or data."""
    run: Path | None = None
    unfinished: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def latest_finished_pretrain(preset: Preset, data_root: Path | str) -> PretrainLookup:
    """The newest finished pretrain run in the preset's runs_dir, of any preset name, made with the preset's
    :data:`RECOGNISER_KEYS` values on ``data_root`` (see :func:`_how_it_differs`)."""
    found = PretrainLookup()
    for path in iter_runs(preset.runtime.runs_dir):
        if not _PRETRAIN_RUN.search(path.name) or not (path / "best.pt").is_file():
            continue
        state = run_state(path)
        differs = _how_it_differs(path, preset, data_root, finished=state == "finished")
        if differs:
            if run_matches(path, preset.name, PRETRAIN):
                found.other.append(f"{path.name} ({differs})")
            continue
        if state == "finished":
            found.run = path
            return found
        found.unfinished.append(f"{path.name} ({state})")
    return found


def _how_it_differs(run: Path, preset: Preset, data_root: Path | str, *, finished: bool) -> str:
    """'' when the pretrain run ``run`` was made with ``preset``'s recogniser settings on ``data_root``, else what
    differs. The epochs it ran for are its summary's (``pretrain --epochs N``); a preset that pre-trains nothing
    itself (``finetune.pretrain_epochs = 0``) takes a pre-training of any length. A finished run's summary names
    its data root; an unfinished one may have none yet (it is never reused, only named)."""
    from engine.errors import PresetError
    from engine.presets import load

    try:
        ran = load(run / "preset.toml")
    except PresetError:
        return "unreadable preset.toml"
    summary = RunDir(run).read_summary()
    epochs = (summary.get("epochs") or {}).get(PRETRAIN) if isinstance(summary.get("epochs"), dict) else None
    wanted = {key: preset.get(key) for key in RECOGNISER_KEYS}
    had = {key: ran.get(key) for key in RECOGNISER_KEYS}
    if isinstance(epochs, int):
        had["finetune.pretrain_epochs"] = epochs
    if not wanted["finetune.pretrain_epochs"]:
        del wanted["finetune.pretrain_epochs"]
    changed = [f"{key} {had[key]!r}" for key in wanted if had[key] != wanted[key]]
    trained_on = summary.get("data_root")
    if (finished or trained_on is not None) and (not isinstance(trained_on, str)
                                                 or Path(trained_on).resolve() != Path(data_root).resolve()):
        changed.append(f"data {trained_on or 'not recorded'}")
    return ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")


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
    """The preset's weights file, else the best.pt of the latest finished pretrain run with its recogniser
    settings on ``data_root`` (:func:`latest_finished_pretrain`), else None."""
    if preset.runtime.edgeface_weights:
        return preset_weights(preset)
    found = latest_finished_pretrain(preset, data_root)
    if found.unfinished:
        emit(Log(PRETRAIN, f"not reusing unfinished pretrain run(s) {', '.join(found.unfinished[:3])}: only a "
                           "finished run's best.pt is used as the recogniser", "warning"))
    if found.other:
        emit(Log(PRETRAIN, f"not reusing pretrain run(s) {'; '.join(found.other[:3])} of preset {preset.name}: "
                           f"made with other recogniser settings or data than this job's (on {data_root})"))
    if found.run is None:
        return None
    emit(Log(PRETRAIN, f"recogniser: {found.run / 'best.pt'} (latest finished pretrain run with this preset's "
                       f"recogniser settings, on {data_root})"))
    return found.run / "best.pt"


def pretrain_epochs(preset: Preset) -> int:
    """finetune.pretrain_epochs, or the error that says how to get a recogniser when it is 0."""
    epochs = preset.finetune.pretrain_epochs
    if epochs <= 0:
        raise WeightsError(f"preset {preset.name} names no EdgeFace weights (runtime.edgeface_weights is empty), "
                           "no finished pretrain run with its recogniser settings on this data exists under "
                           f"{preset.runtime.runs_dir}, and "
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
        note = _stopped_pretraining(Path(result.run_dir))
        if status is not None:
            status.end("stopped", note)
        say(Log(PRETRAIN, note, "warning"))
        raise JobStopped(note)
    if status is not None:
        status.hand_over()                     # the job's own status takes over (no final state written)
    return Path(result.run_dir) / "best.pt"


def _stopped_pretraining(run_dir: Path) -> str:
    """Where a stopped on-demand pre-training left its checkpoint, and how to go on."""
    if not (run_dir / "last.pt").is_file():
        return (f"stopped during the recogniser pre-training ({run_dir}) before it saved a checkpoint; start this "
                "job again to pre-train anew")
    return (f"stopped during the recogniser pre-training: its resumable checkpoint is {run_dir / 'last.pt'}; "
            f"`vlr-workbench pretrain --resume {run_dir}` finishes it, then start this job again (it uses that "
            "run's best.pt)")


def load_frozen_recogniser(path: str | Path, emit: Emit, job: str) -> torch.nn.Module:
    """The recogniser file as a frozen module (the identity and feature-matching losses' reference)."""
    from engine.models.edgeface import load_edgeface

    recogniser = load_edgeface(path)
    emit(Log(job, f"frozen recogniser {recogniser.variant} from {path}"))
    return recogniser
