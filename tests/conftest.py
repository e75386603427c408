"""Shared fixtures: every test runs with its own config and cache directories and 2 torch threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """User presets and caches go to temporary directories, never to the real home."""
    monkeypatch.setenv("VLR_WORKBENCH_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("VLR_WORKBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real weights and faces); skips when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a fresh clone has none)")
    return SHARED
