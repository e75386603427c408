"""One recogniser per study: trials of a preset that names no EdgeFace weights all use the same one.

Without this, trials started at the same moment (``--parallel K``, or several controllers) each found no
finished pre-training and pre-trained their own recogniser (``...-pretrain``, ``...-pretrain-2``): their
identity losses and fine-tuning starts differed, and the trials did not compare fairly. Now the study's first
controller finds (or pre-trains, once, before the first trial) the recogniser and records its path in the
study (user attribute ``recogniser``); every controller pins ``runtime.edgeface_weights`` of its trials to it,
the others waiting for the record. A space that varies the recogniser's own settings (``RECOGNISER_KEYS``)
needs one recogniser per trial and is left alone.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Log
from engine.jobs.options import SweepOptions
from engine.jobs.registry import StopFlag
from engine.presets import Preset
from engine.sweep import controllers
from engine.sweep.space import SearchSpace

JOB = "sweep"
ATTR = "recogniser"
POLL_S = 2.0             # how often a controller looks for the first one's record
SAY_EVERY_S = 60.0       # and says it is still waiting
LOSS_KEYS = ("dsr.lambda_identity", "dsr.lambda_feature_match", "dsr.lambda_perceptual", "dsr.perceptual_network")


def needs_recogniser(preset: Preset, space: SearchSpace, job: str) -> bool:
    """Whether the study's trials use a recogniser (fine-tuning, a pipeline, or DSR losses through EdgeFace,
    in the base preset or anywhere the space may take it)."""
    if job != "train-dsr":
        return True
    from engine.losses.combined import LossWeights   # loads torch (see pin_study_recogniser)

    keys = {param.key for param in space.params} | {key for listed in space.listed for key in listed.values}
    return LossWeights.from_config(preset.dsr).needs_recogniser or bool(keys & set(LOSS_KEYS))


def pin_study_recogniser(study, preset: Preset, space: SearchSpace, opts: SweepOptions, data, rank: int,
                         emit: Emit, stop: StopFlag) -> Preset:
    """The base preset of this controller's trials: ``preset`` with ``runtime.edgeface_weights`` set to the
    study's recogniser when the preset names none (see the module doc)."""
    if preset.runtime.edgeface_weights or not needs_recogniser(preset, space, opts.job):
        return preset
    from engine.jobs.recogniser import RECOGNISER_KEYS   # loads torch: the app imports this module without it

    varied = sorted({param.key for param in space.params} & set(RECOGNISER_KEYS))
    if varied:
        emit(Log(JOB, f"the space varies the recogniser's own settings ({', '.join(varied)}): each trial finds or "
                      "pre-trains its own recogniser"))
        return preset
    recorded = study.user_attrs.get(ATTR)
    if recorded is None:
        recorded = _make(study, preset, data, emit, stop) if rank == 0 or _first_gone(study) else \
            _wait(study, preset, data, emit, stop)
    if not Path(recorded).is_file():
        raise WorkbenchError(f"the study's recogniser {recorded} (recorded by its first controller) is not a file "
                             "here. Put runs_dir on a folder every machine shares, or set runtime.edgeface_weights "
                             "of the preset to a recogniser every machine has.")
    emit(Log(JOB, f"recogniser of every trial: {recorded} (the study's; runtime.edgeface_weights)"))
    return preset.with_changes({"runtime.edgeface_weights": str(recorded)})


def _make(study, preset: Preset, data, emit: Emit, stop: StopFlag) -> str:
    from engine.data.resolve import job_data_root

    root = job_data_root(preset, data, emit, JOB)
    emit(Log(JOB, "the preset names no EdgeFace weights: one recogniser for the whole study, found or pre-trained "
                  "now, before the first trial"))
    from engine.jobs.recogniser import recogniser_weights

    path = str(Path(recogniser_weights(preset, root, emit, stop)).resolve())
    study.set_user_attr(ATTR, path)
    return path


def _first_gone(study) -> bool:
    """The study's first controller ran on this host and its process is gone (it cannot record any more)."""
    from engine.io.atomic import pid_alive

    first = (controllers.registered(study) or [{}])[0]
    return first.get("host") == socket.gethostname() and not pid_alive(first.get("pid"))


def _wait(study, preset: Preset, data, emit: Emit, stop: StopFlag) -> str:
    """Wait for the first controller's record (it pre-trains); take over when it is gone from this host."""
    first = (controllers.registered(study) or [{}])[0]
    emit(Log(JOB, f"waiting for the study's first controller ({first.get('host')}, pid {first.get('pid')}) to find "
                  "or pre-train the study's recogniser"))
    said = time.monotonic()
    while True:
        if stop.is_set():
            raise JobStopped()
        recorded = study.user_attrs.get(ATTR)
        if recorded is not None:
            return recorded
        if _first_gone(study):
            return _make(study, preset, data, emit, stop)
        if time.monotonic() - said > SAY_EVERY_S:
            emit(Log(JOB, "still waiting for the study's recogniser"))
            said = time.monotonic()
        time.sleep(POLL_S)
