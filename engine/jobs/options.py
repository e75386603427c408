"""Typed options of each job (what a front end may set beyond the preset and the data root).

Kept free of torch so the CLI can build them before the engine loads. ``None`` means "the preset's
value" for epoch counts and "none given" for paths.
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH_KEYS = {"train-dsr": "dsr.batch_size", "finetune": "finetune.batch_size"}   # find-batch: job -> its key


@dataclass(frozen=True)
class TrainOptions:
    """Shared by every training job."""
    run_dir: str | None = None            # write the run into exactly this directory
    resume: str | None = None             # continue this run directory (its preset, data and position)
    allow_other_data: bool = False        # resume on data that differs from the run's recorded dataset


@dataclass(frozen=True)
class DSROptions(TrainOptions):
    epochs: int | None = None
    edgeface: str | None = None           # frozen recogniser for the identity and feature-matching losses


@dataclass(frozen=True)
class FinetuneOptions(TrainOptions):
    dsr: str | None = None                # DSR checkpoint whose outputs are the inputs (None: bicubic)
    edgeface: str | None = None           # weights to start from
    stage1_epochs: int | None = None
    stage2_epochs: int | None = None


@dataclass(frozen=True)
class PretrainOptions(TrainOptions):
    epochs: int | None = None


@dataclass(frozen=True)
class PipelineOptions:
    edgeface: str | None = None
    resume: str | None = None             # a pipeline run directory: continue at the stage it stopped in
    allow_other_data: bool = False
    baselines: bool = False               # also fine-tune a recogniser on bicubic images (the fair bicubic row)
    folds: int | None = None              # repeat the whole pipeline on K subject splits (None: the data's split)
    bootstrap: int | None = None          # evaluation's bootstrap resamples (None: evaluate's default)
    distractors: int | None = None        # gallery distractors of the evaluation (None: eval.distractors)
    run_dir: str | None = None            # exactly this pipeline directory (None: a new one under runs_dir)


@dataclass(frozen=True)
class EvaluateOptions:
    dsr: str | None = None                # DSR checkpoint (default: the preset's latest finished train-dsr run)
    edgeface: str | None = None           # recogniser fine-tuned on DSR outputs (scores the dsr and hr rows)
    edgeface_bicubic: str | None = None   # recogniser fine-tuned on bicubic images (scores the bicubic row)
    edgeface_base: str | None = None      # base recogniser (the *_base rows)
    rows: list | None = None              # [{"name", "probes", "recogniser"}] instead of the default plan
    bootstrap: int | None = None          # bootstrap resamples for the intervals (None: the default, 0: none)
    distractors: int | None = None        # extra gallery identities with no probe (None: eval.distractors)
    run_dir: str | None = None


@dataclass(frozen=True)
class SweepOptions:
    space: str | None = None              # the search-space TOML (engine.sweep.space)
    job: str = "train-dsr"                # what a trial runs: train-dsr, finetune or pipeline
    trials: int = 10                      # finished trials the study holds at the end (a resume counts the earlier)
    objective: str = "val.psnr"           # val.METRIC (best epoch), eval.ROW.METRIC, or summary.KEY of a trial's run
    direction: str = "maximize"
    objective2: str | None = None         # a second objective: the study keeps the Pareto front of the two
    direction2: str = "minimize"
    study: str | None = None              # its name (default: PRESET-sweep); the same name joins or resumes it
    storage: str | None = None            # an RDB URL; default: a journal file under runtime.runs_dir/sweeps
    storage_wait: float | None = None     # seconds an RDB storage may not answer before the controller stops
    sampler: str = "tpe"                  # tpe, random or grid
    seed: int | None = None               # the sampler's seed (default: runtime.seed)
    prune: bool = True                    # stop trials whose per-epoch val.METRIC is below the median (not grid)
    from_run: str | None = None           # first try this run's preset and each of its tips, then the best's tips
    timeout: float | None = None          # wall-time budget in seconds: no trial starts after it (running ones end)
    parallel: int = 1                     # trials at once, each a CLI process (engine.sweep.parallel)
    gpus_per_trial: int = 1               # CUDA devices of each parallel trial (more than one: torchrun)
    baselines: bool = False               # pipeline trials: also fine-tune on bicubic (eval.bicubic_best is fair)
    folds: int | None = None              # pipeline trials: K subject folds (eval.ROW.METRIC = the fold mean)


@dataclass(frozen=True)
class ExportOptions:
    out: str = ""                         # the model folder to write (created; replaced with force)
    run: str | None = None                # a finished pipeline or evaluate run (its DSR, recogniser, evaluation)
    dsr: str | None = None                # instead of a run: a DSR checkpoint ...
    edgeface: str | None = None           # ... and the recogniser for both graphs
    int8: bool = False                    # also the int8 graphs (static quantisation calibrated on the val split)
    opset: int = 18
    force: bool = False                   # replace a model folder already at ``out``
    parity_images: int = 512              # test images run through ONNX Runtime and PyTorch (0: all)
    calibration_images: int = 128         # val images the int8 calibration reads
