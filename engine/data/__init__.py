"""Datasets: the guide's layout, the uint8 split loader, demo faces, `prepare`, and the data root.

The names below are imported on first use (PEP 562), so that the torch-free modules of this package
(``layout``, ``photos``, ``pixels``) can be imported on a machine without PyTorch (``identify``).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "generate_demo_dataset": "engine.data.demo",
    "HR_DIR": "engine.data.layout", "SPLITS": "engine.data.layout", "VLR_DIR": "engine.data.layout",
    "parse_size": "engine.data.layout", "split_dir": "engine.data.layout", "subject_of": "engine.data.layout",
    "PairedSplit": "engine.data.pairs", "load_split": "engine.data.pairs", "to_float": "engine.data.pairs",
    "prepare_dataset": "engine.data.prepare",
    "demo_cache_root": "engine.data.resolve", "ensure_demo_dataset": "engine.data.resolve",
    "resolve_data_root": "engine.data.resolve",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
