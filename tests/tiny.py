"""The one tiny DSR set-up of the tests: generated demo faces at VLR 8x8 -> HR 32 and cpu-demo scaled to a run of
seconds (a small network, the CPU, the recogniser losses off). Tests change what they need on top."""

from __future__ import annotations

from pathlib import Path

from engine import presets
from engine.data.demo import generate_demo_dataset
from engine.presets import Preset

RECOGNISER_TERMS_OFF = {"dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0}


def tiny_dsr_data(folder: Path, identities: int, per_identity: int) -> Path:
    """Demo faces in the dataset layout under ``folder``, VLR 8x8 and HR 32."""
    return generate_demo_dataset(folder, identities=identities, per_identity=per_identity, seed=0,
                                 vlr_size=(8, 8), hr_size=32)


def tiny_dsr_preset(runs_dir: Path, **changes) -> Preset:
    """cpu-demo at VLR 8x8 -> HR 32, 8 channels, 1 residual block, batch 8, on the CPU, pixel and TV loss only,
    runs under ``runs_dir``; ``changes`` (``{"dsr.epochs": 2}`` style keys) go on top."""
    return presets.load("cpu-demo").with_changes({
        "data.vlr_width": 8, "data.vlr_height": 8, "data.hr_size": 32, "dsr.base_channels": 8,
        "dsr.residual_blocks": 1, "dsr.batch_size": 8, "runtime.device": "cpu", "runtime.runs_dir": str(runs_dir),
        **RECOGNISER_TERMS_OFF, **changes})
