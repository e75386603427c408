"""``vlr-workbench train-dsr``: train the DSR super-resolution network headless, with rich progress."""

from __future__ import annotations

import argparse

from engine import presets
from engine.jobs.options import DSROptions
from engine.jobs.registry import JobRequest
from workbench.cli.job_runner import run_in_foreground
from workbench.cli.run_flags import add_run_flags, check_resume, launch_torchrun

DEFAULT_PRESET = "cpu-demo"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-dsr", help="train the DSR super-resolution network (VLR -> 128x128)",
        description="Train DSR on a dataset's train split, validating PSNR/SSIM against bicubic every epoch. "
                    "Writes runs/<time>-<preset>-train-dsr/ (preset.toml, metrics.jsonl, best.pt, last.pt, "
                    "samples/, summary.json). Ctrl-C stops after the current step and saves a resumable last.pt.")
    parser.add_argument("--preset", help=f"preset name or .toml path (default {DEFAULT_PRESET}; with --resume, the "
                                         "run's own preset.toml is used)")
    parser.add_argument("--data", help="dataset root (default: the preset's data.root, else the built-in demo faces)")
    parser.add_argument("--epochs", type=_positive_int, help="epochs to train (default: dsr.epochs of the preset)")
    add_run_flags(parser, "train-dsr")
    parser.add_argument("--edgeface", metavar="WEIGHTS", help="frozen recogniser for the identity and feature-"
                                                              "matching losses (default: runtime.edgeface_weights, "
                                                              "else one pre-trained on the HR images)")
    parser.set_defaults(func=train_dsr)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of epochs, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"epochs must be at least 1, got {value}")
    return value


def train_dsr(args: argparse.Namespace) -> int:
    check_resume(args.resume, "train-dsr")
    if args.nproc and args.nproc > 1:
        return launch_torchrun(args.nproc)
    preset = presets.load(args.preset or DEFAULT_PRESET)
    options = DSROptions(epochs=args.epochs, run_dir=args.run_dir, resume=args.resume, edgeface=args.edgeface,
                         allow_other_data=args.allow_other_data)
    return run_in_foreground(JobRequest("train-dsr", preset, data=args.data, options=options))
