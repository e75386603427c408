"""Shared fixtures: every test runs with its own config and cache directories and 2 torch threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: without one they are skipped, saying so (CI never needs a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu; run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """User presets and caches go to temporary directories, never to the real home."""
    monkeypatch.setenv("VLR_WORKBENCH_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("VLR_WORKBENCH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def prompt_charts(monkeypatch):
    """App tests see new job data drawn within 0.2 s (the app waits up to REDRAW_SECONDS = 5 s: a quieter job)."""
    from workbench.app.widgets import charts

    monkeypatch.setattr(charts, "REDRAW_SECONDS", 0.2)


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real weights and faces); skips when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a fresh clone has none)")
    return SHARED


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A tiny demo dataset (12 identities x 6 images, VLR 16x16, HR 128) in the layout, made once per session.

    test: 3 unseen identities (18 images); val: 1 held-out image of each of the 9 training identities.
    """
    from engine.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo16") / "data", identities=12, per_identity=6,
                                 seed=0, vlr_size=(16, 16), hr_size=128)


@pytest.fixture
def fast_pipeline_preset(tmp_path):
    """cpu-demo at 16x16 with one epoch per stage and a random edgeface_xxs as its weights (no pre-training):
    a pipeline of seconds per fold on ``demo_root``; runs go to tmp_path/runs."""
    import torch

    from engine import presets
    from engine.io import atomic
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    torch.manual_seed(0)
    weights = atomic.torch_save(tmp_path / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    return presets.load("cpu-demo").with_changes({
        "data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "dsr.epochs": 1, "dsr.batch_size": 16,
        "dsr.base_channels": 8, "dsr.residual_blocks": 1, "finetune.stage1_epochs": 1, "finetune.stage2_epochs": 1,
        "finetune.batch_size": 16, "runtime.edgeface_variant": "edgeface_xxs",
        "runtime.runs_dir": str(tmp_path / "runs"), "runtime.edgeface_weights": str(weights)})


@pytest.fixture(scope="session")
def demo_root_32(tmp_path_factory) -> Path:
    """The same tiny demo dataset as ``demo_root`` with 32x32 VLR images."""
    from engine.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo32") / "data", identities=12, per_identity=6,
                                 seed=0, vlr_size=(32, 32), hr_size=128)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (tests/pg_server.py). Skipped where the server's binaries or
    psycopg are missing, except where VLR_WORKBENCH_REQUIRE_POSTGRES=1 (CI): there a missing server fails."""
    import os

    from pg_server import Cluster, server_bin

    required = os.environ.get("VLR_WORKBENCH_REQUIRE_POSTGRES") == "1"
    bin_dir = server_bin()
    try:
        import psycopg  # noqa: F401 - the driver the sweeps use
    except ImportError:
        bin_dir = None
    if bin_dir is None:
        why = ("no PostgreSQL server binaries (initdb, pg_ctl) or no psycopg: `apt-get install -y postgresql` and "
               "`pip install -c constraints.txt '.[postgres]'`")
        if required:
            pytest.fail(why)
        pytest.skip(why)
    cluster = Cluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres) -> str:
    """The URL of a fresh database on the test cluster (one per test)."""
    return postgres.url(postgres.new_database())


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """Generated demo faces at VLR 8x8 -> HR 32, 8 people x 4 (tests/tiny.py), once per test module (a module
    that needs other faces defines its own ``tiny_root``)."""
    from tiny import tiny_dsr_data

    return tiny_dsr_data(tmp_path_factory.mktemp("tiny") / "data", identities=8, per_identity=4)


@pytest.fixture
def tiny(tmp_path) -> Path:
    """The tiny DSR preset (tests/tiny.py) with 1 epoch and no warm-up, saved as ``tiny.toml`` (runs in
    ``tmp_path/runs``)."""
    from engine import presets
    from tiny import tiny_dsr_preset

    preset = tiny_dsr_preset(tmp_path / "runs", **{"dsr.epochs": 1, "dsr.warmup_epochs": 0})
    return presets.save(presets.derive(preset, "tiny"), tmp_path / "tiny.toml")
