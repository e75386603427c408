"""Recogniser pre-training on HR images (job ``pretrain``): the ArcFace loop from a random
initialisation, head and whole model together (``finetune.pretrain_lr``, warm-up + cosine). The
demo path when no pretrained EdgeFace weights exist; ``engine.jobs.recogniser`` runs it on demand.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine import distributed
from engine.data import to_float
from engine.data.resolve import job_data_root
from engine.distributed import Context
from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Finished, Log
from engine.jobs.options import PretrainOptions
from engine.jobs.registry import JobRequest, StopFlag
from engine.models.edgeface import build_edgeface
from engine.presets import Preset
from engine.runtime import Runtime, configure_backends, prepare_model, resolve, seed_everything
from engine.train.bookkeeper import Bookkeeper, main_only
from engine.train.resume import Resume, check_resume_data, data_record, open_resume, resume_data_root
from engine.train.recognition import ArcFaceTrainer, load_splits

JOB = "pretrain"


def run_pretrain(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    """Train a recogniser from scratch on the HR training images (head and whole model together)."""
    opts: PretrainOptions = request.options or PretrainOptions()
    resume, opts, preset = open_resume(request, opts, JOB, emit)
    epochs = int(opts.epochs or (resume.checkpoint.get("epochs", {}).get("pretrain") if resume else None)
                 or preset.finetune.pretrain_epochs)
    if epochs <= 0:
        raise WorkbenchError(f"nothing to train: finetune.pretrain_epochs is 0 in preset {preset.name}. Pass "
                             "--epochs N or set finetune.pretrain_epochs (cpu-demo sets 40).")
    runtime = resolve(preset)
    ctx, device = distributed.setup(runtime.device)
    data_root = job_data_root(preset, resume_data_root(resume, request.data), main_only(emit, ctx), JOB)
    return pretrain(preset, Path(data_root), epochs, emit, stop, ctx, replace(runtime, device=device),
                    run_dir=opts.run_dir, resume=resume, allow_other_data=opts.allow_other_data)


def pretrain(preset: Preset, data_root: Path, epochs: int, emit: Emit, stop: StopFlag, ctx: Context,
             runtime: Runtime, *, run_dir: str | None = None, resume: Resume | None = None,
             allow_other_data: bool = False) -> Finished:
    """One pre-training run (a stop ends it with ``Finished(stopped=True)`` and a resumable last.pt)."""
    configure_backends(runtime)
    generator = seed_everything(preset.runtime.seed)
    train, val = load_splits(data_root, preset, runtime, main_only(emit, ctx), JOB)
    data = data_record(data_root, train)
    check_resume_data(resume, data, allow_other_data)
    model = build_edgeface(preset.runtime.edgeface_variant).to(runtime.device)
    prepare_model(model, runtime, lambda m: main_only(emit, ctx)(Log(JOB, m)), "EdgeFace")
    book = Bookkeeper.open(JOB, preset, emit, stop, ctx, runtime.device, run_dir=run_dir, resume=resume,
                           lr_keys="finetune.pretrain_lr")
    with book.lifetime():
        trainer = ArcFaceTrainer(book, preset, runtime, model, train, val, "hr", to_float, generator, resume)
        trainer.extra = {"input": "hr", "data_root": str(data_root), "data": data, "epochs": {"pretrain": epochs}}
        try:
            trainer.run_stage("pretrain", epochs, train_backbone=True, patience=preset.finetune.early_stop_patience)
        except JobStopped:
            return trainer.finish(stopped=True)
        return trainer.finish(stopped=False)
