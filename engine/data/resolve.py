"""Which dataset a job uses: an explicit override, the preset's data.root, or cached demo faces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from engine.data.demo import DEMO_TEST_FRACTION, DEMO_VAL_FRACTION, DEMO_VERSION, generate_demo_dataset
from engine.data.layout import MANIFEST
from engine.errors import DataError
from engine.io.paths import cache_dir

ProgressFn = Callable[[int, int], None]


def demo_params(identities: int, per_identity: int, seed: int, vlr_size: tuple[int, int],
                hr_size: int = 128) -> dict:
    return {"version": DEMO_VERSION, "identities": int(identities), "per_identity": int(per_identity),
            "seed": int(seed), "vlr_size": [int(vlr_size[0]), int(vlr_size[1])], "hr_size": int(hr_size),
            "test_fraction": DEMO_TEST_FRACTION, "val_fraction": DEMO_VAL_FRACTION}


def demo_cache_root(identities: int, per_identity: int, seed: int, vlr_size: tuple[int, int],
                    hr_size: int = 128) -> Path:
    """``cache_dir()/demo/<hash of the parameters>``."""
    params = demo_params(identities, per_identity, seed, vlr_size, hr_size)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "demo" / digest


def ensure_demo_dataset(identities: int, per_identity: int, seed: int, vlr_size: tuple[int, int],
                        hr_size: int = 128, progress: ProgressFn | None = None) -> Path:
    """The cached demo dataset for these parameters, generated (atomically) when absent."""
    root = demo_cache_root(identities, per_identity, seed, vlr_size, hr_size)
    if (root / MANIFEST).is_file():
        return root
    return generate_demo_dataset(root, identities=identities, per_identity=per_identity, seed=seed,
                                 vlr_size=vlr_size, hr_size=hr_size, progress=progress)


def resolve_data_root(preset, override: str | Path | None = None, progress: ProgressFn | None = None) -> Path:
    """``override``, else ``preset.data.root``, else the demo faces for the preset's demo settings."""
    root = check_data_root(preset, override)
    if root is not None:
        return root
    d = preset.data
    return ensure_demo_dataset(d.demo_identities, d.demo_per_identity, d.demo_seed, (d.vlr_width, d.vlr_height),
                               d.hr_size, progress)


def check_data_root(preset, override: str | Path | None = None) -> Path | None:
    """The dataset root ``override`` or ``preset.data.root`` names (None: the demo faces), refused when it is no
    folder: a job checks it before it makes its run directory."""
    configured = str(override) if override else preset.data.root
    if configured:
        root = Path(configured).expanduser()
        if not root.is_dir():
            origin = "--data" if override else f"data.root of preset '{preset.name}'"
            size = f"{preset.data.vlr_width}x{preset.data.vlr_height}"
            state = "is a file, not a folder" if root.exists() else "does not exist"
            raise DataError(f"Dataset root {root} ({origin}) {state}. Create it with "
                            f"`vlr-workbench prepare SRC {root} --vlr {size}` from a folder of face photos, or "
                            f"`vlr-workbench demo-data {root} --vlr {size}` for demo faces; or leave data.root "
                            f"empty to use the built-in demo faces.")
        return root
    return None


def job_data_root(preset, override: str | Path | None, emit, job: str) -> Path:
    """``resolve_data_root`` for a job: generating demo faces shows as ``Progress`` of stage "data"
    (about 20 updates), and a ``Log`` line says which data the job uses."""
    from engine.events import Log, Progress

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 20) == 0:
            emit(Progress(job, "data", 0, 0, done, total))

    root = resolve_data_root(preset, override, progress)
    if override or preset.data.root:
        emit(Log(job, f"data: {root}"))
    else:
        emit(Log(job, f"data: built-in demo faces at {root} (set data.root or pass --data for a real dataset)"))
    return root
