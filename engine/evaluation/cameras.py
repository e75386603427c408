"""Which camera made the faces an evaluation scores: the camera protocols of eval.json.

- ``clean``: the dataset's VLR images are plain antialiased bicubic downsamples of HR;
- ``same camera``: the dataset was made with ``prepare --degrade SPEC`` (every split from one camera);
- ``unseen camera``: ``eval.probe_degrade`` (``--probe-degrade SPEC``) makes the test probes again from HR
  through a camera that training never used, seeded per image; the gallery stays HR.

The training camera (the preset's ``[degrade]``) is recorded beside it. A probe camera on a dataset that
is already degraded would degrade twice: refused before anything runs, naming both specs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.data.camera import Camera, camera_from_config, parse_spec, spec_text
from engine.data.layout import MANIFEST
from engine.errors import DataError

CLEAN, SAME, UNSEEN = "clean", "same camera", "unseen camera"


def dataset_camera(root: Path | str | None) -> str | None:
    """The camera spec ``prepare --degrade`` recorded in ``root``'s manifest.json, None for a clean dataset."""
    if not root:
        return None
    try:
        record = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8")).get("degrade")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("spec"), str):
        return record["spec"]
    parts = []    # a manifest of the first prepare --degrade: its ranges, each step always applied
    for key, name in (("blur", "blur_sigma"), ("noise", "noise_sigma"), ("jpeg", "jpeg_quality")):
        span = record.get(name)
        if isinstance(span, list) and len(span) == 2 and (key == "jpeg" or max(span) > 0):
            parts.append(f"{key}={span[0]:g}:{span[1]:g}")
    return ",".join(parts) or "degraded (spec not recorded)"


def probe_camera(preset, data_root: Path | str | None) -> Camera | None:
    """The camera of ``eval.probe_degrade`` (None when empty); a DataError when the dataset is degraded already."""
    spec = preset.eval.probe_degrade
    if not spec:
        return None
    camera = parse_spec(spec)
    made_with = dataset_camera(data_root)
    if camera is not None and made_with:
        raise DataError(f"--probe-degrade / eval.probe_degrade {spec!r} asks for an unseen camera, but the dataset "
                        f"{data_root} was made by prepare --degrade {made_with!r}: its probes would be degraded twice. "
                        "Evaluate the unseen camera on a clean dataset (prepare without --degrade), or leave "
                        "--probe-degrade out to measure this dataset's own camera (the 'same camera' protocol).")
    return camera


def camera_record(preset, data_root: Path | str | None, probes: Camera | None,
                  dsr_camera: str | None = "preset") -> dict[str, Any]:
    """eval.json's ``protocol.camera``: the protocol's name and the three specs behind it. ``training`` is the
    camera the evaluated DSR checkpoint records (``dsr_camera``), the preset's ``[degrade]`` when the checkpoint
    predates the record (``"preset"``) or no DSR was evaluated."""
    made_with = dataset_camera(data_root)
    if dsr_camera == "preset":
        dsr_camera = spec_text(camera_from_config(preset.degrade))
    name = UNSEEN if probes is not None else SAME if made_with else CLEAN
    return {"protocol": name, "probes": spec_text(probes), "dataset": made_with,
            "training": dsr_camera,
            "probe_seed": preset.runtime.seed if probes is not None else None}
