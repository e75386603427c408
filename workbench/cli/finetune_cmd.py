"""``vlr-workbench finetune`` and ``vlr-workbench pretrain``: train the EdgeFace recogniser headless."""

from __future__ import annotations

import argparse

from engine import presets
from engine.jobs.options import FinetuneOptions, PretrainOptions
from engine.jobs.registry import JobRequest
from workbench.cli.job_runner import run_in_foreground
from workbench.cli.run_flags import add_run_flags, check_resume, launch_torchrun

DEFAULT_PRESET = "cpu-demo"


def _epochs(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number of epochs, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"epochs must be at least {minimum}, got {value}")
        return value
    return parse


def _common(parser: argparse.ArgumentParser, job: str) -> None:
    parser.add_argument("--preset", help=f"preset name or .toml path (default {DEFAULT_PRESET})")
    parser.add_argument("--data", help="dataset root (default: the preset's data.root, else the built-in demo faces)")
    add_run_flags(parser, job)


def register(subparsers) -> None:
    finetune = subparsers.add_parser(
        "finetune", help="fine-tune EdgeFace with an ArcFace head on DSR outputs of the training images",
        description="Stage 1 trains the ArcFace head with the backbone frozen (finetune.head_lr); stage 2 trains "
                    "the whole model (finetune.backbone_lr, head_lr_stage2, cosine schedule, early stopping on val "
                    "top-1). Inputs are the training VLR images super-resolved by the frozen DSR checkpoint "
                    "(--dsr; bicubic upscaling without it). Validation uses held-out images of the training "
                    "identities. Writes runs/<time>-<preset>-finetune/ (metrics.jsonl, best.pt, last.pt, "
                    "summary.json). Ctrl-C stops after the current step and saves last.pt.")
    _common(finetune, "finetune")
    finetune.add_argument("--dsr", metavar="CKPT", help="DSR checkpoint (best.pt of a train-dsr run) whose outputs "
                                                        "are the recogniser's inputs (default: bicubic upscaling)")
    finetune.add_argument("--edgeface", metavar="WEIGHTS",
                          help="EdgeFace weights to start from (default: runtime.edgeface_weights, else the latest "
                               "pretrain run's best.pt, else pre-train now when finetune.pretrain_epochs > 0)")
    finetune.add_argument("--stage1-epochs", type=_epochs(0), help="head-only epochs (default: finetune.stage1_epochs)")
    finetune.add_argument("--stage2-epochs", type=_epochs(0), help="whole-model epochs (default: "
                                                                   "finetune.stage2_epochs; the guide: 25)")
    finetune.set_defaults(func=finetune_command)

    pretrain = subparsers.add_parser(
        "pretrain", help="pre-train an EdgeFace recogniser from scratch on the HR training images",
        description="For datasets without pretrained EdgeFace weights (the demo path): trains "
                    "runtime.edgeface_variant with an ArcFace head on the HR images (finetune.pretrain_lr, "
                    "finetune.pretrain_epochs). Its best.pt is what train-dsr, finetune and evaluate use when "
                    "runtime.edgeface_weights is empty.")
    _common(pretrain, "pretrain")
    pretrain.add_argument("--epochs", type=_epochs(1), help="epochs (default: finetune.pretrain_epochs)")
    pretrain.set_defaults(func=pretrain_command)


def _run(kind: str, args: argparse.Namespace, options) -> int:
    check_resume(args.resume, kind)
    if args.nproc and args.nproc > 1:
        return launch_torchrun(args.nproc)
    preset = presets.load(args.preset or DEFAULT_PRESET)
    return run_in_foreground(JobRequest(kind, preset, data=args.data, options=options))


def finetune_command(args: argparse.Namespace) -> int:
    return _run("finetune", args, FinetuneOptions(
        dsr=args.dsr, edgeface=args.edgeface, stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs,
        run_dir=args.run_dir, resume=args.resume, allow_other_data=args.allow_other_data))


def pretrain_command(args: argparse.Namespace) -> int:
    return _run("pretrain", args, PretrainOptions(epochs=args.epochs, run_dir=args.run_dir, resume=args.resume,
                                                  allow_other_data=args.allow_other_data))
