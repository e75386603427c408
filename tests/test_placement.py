"""The cache placement rule (device vs pinned host) from fake free-memory figures, and the batch feeder."""

from __future__ import annotations

import pytest
import torch

from engine.data.pairs import PairedSplit
from engine.data.placement import (GUIDE_JOB_BYTES, MARGIN_BYTES, BatchFeeder, choose_placement,
                                   estimate_job_bytes, place_splits, split_bytes)

GB = 10**9


def test_the_guides_scale_does_not_fit_an_8_gb_card_but_fits_an_80_gb_one():
    cache = 111_568 * 3 * (128 * 128 + 32 * 32)  # the guide's training split in uint8: 5.8 GB
    assert cache > 5.5 * GB
    assert choose_placement(cache, 8 * GB, int(GUIDE_JOB_BYTES)) == "pinned"
    assert choose_placement(cache, 78 * GB, int(GUIDE_JOB_BYTES)) == "device"


def test_the_margin_is_part_of_the_rule():
    cache, job = 2 * GB, 3 * GB
    assert choose_placement(cache, cache + job + MARGIN_BYTES, job) == "device"       # exactly fits
    assert choose_placement(cache, cache + job + MARGIN_BYTES - 1, job) == "pinned"   # one byte short
    assert choose_placement(cache, cache + job, job, margin=0) == "device"
    with pytest.raises(ValueError):
        choose_placement(-1, GB, GB)


def test_job_estimate_scales_with_the_batch():
    assert estimate_job_bytes(14) == int(GUIDE_JOB_BYTES)
    assert estimate_job_bytes(28) == 2 * estimate_job_bytes(14)


def _split(n: int = 10) -> PairedSplit:
    return PairedSplit("train", None, [f"{i:03d}_x.png" for i in range(n)], [f"{i:03d}" for i in range(n)],
                       [f"{i:03d}" for i in range(n)], torch.arange(n),
                       torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8),
                       torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8))


def test_place_splits_keeps_the_cache_on_the_host_when_the_measured_free_memory_is_short():
    split = _split()
    size = split_bytes([split])
    assert size == 10 * 3 * (256 + 16) + 10 * 8
    messages = []
    placed, where = place_splits([split], "cuda", job_bytes=GB, log=messages.append,
                                 free_bytes=lambda device: GB + MARGIN_BYTES + size - 1)
    assert where == "pinned" and placed[0].hr is split.hr
    assert "pinned host memory" in messages[0] and "GiB free on cuda" in messages[0]

    messages.clear()
    placed, where = place_splits([split], "cuda", job_bytes=GB, on_device=False, log=messages.append,
                                 free_bytes=lambda device: 100 * GB)
    assert where == "pinned" and "cache_on_device = false" in messages[0]


@pytest.mark.gpu
def test_place_splits_moves_the_cache_when_it_fits():
    placed, where = place_splits([_split()], "cuda", job_bytes=0, free_bytes=lambda device: 100 * GB)
    assert where == "device" and placed[0].hr.is_cuda


def test_cpu_jobs_have_nothing_to_place():
    split = _split()
    placed, where = place_splits([split], "cpu", job_bytes=GB, free_bytes=lambda device: 0)
    assert where == "host" and placed[0] is split


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_batch_feeder_returns_the_indexed_images(device):
    split = _split(20)
    feeder = BatchFeeder(device)
    for start in range(0, 20, 6):  # batches of varying size reuse the staging buffers
        index = torch.arange(start, min(20, start + 6)).flip(0)
        out = feeder(split.hr, index)
        assert out.device.type == device and torch.equal(out.cpu(), split.hr[index])
