"""The opt-in largest-batch search: backs off on out-of-memory, and its result saves into a preset."""

from __future__ import annotations

import pytest
import torch

from engine import presets as P
from engine.jobs.batch_search import dsr_step, finetune_step, largest_batch
from engine.runtime import resolve


def _fits_up_to(capacity: int, calls: list[int]):
    def try_batch(n: int) -> None:
        calls.append(n)
        if n > capacity:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {n}")
    return try_batch


@pytest.mark.parametrize("capacity, start", [(37, 12), (12, 12), (5, 12), (1, 4), (100, 1)])
def test_the_search_finds_the_exact_capacity_with_few_tries(capacity, start):
    calls: list[int] = []
    largest, tried = largest_batch(_fits_up_to(capacity, calls), start, limit=512)
    assert largest == capacity
    assert tried[capacity] and not tried.get(capacity + 1, False)
    assert len(calls) == len(set(calls)) <= 16          # each size tried once, doubling then bisection


def test_nothing_fits_and_the_limit_caps_the_search():
    assert largest_batch(_fits_up_to(0, []), 8, limit=64)[0] == 0
    assert largest_batch(_fits_up_to(10**6, []), 8, limit=64)[0] == 64


def test_real_steps_of_both_jobs_run_on_the_cpu():
    preset = P.load("cpu-demo").with_changes({"runtime.device": "cpu", "dsr.base_channels": 8,
                                              "dsr.residual_blocks": 1, "runtime.channels_last": False})
    runtime = resolve(preset)
    dsr_step(preset, runtime)(2)
    finetune_step(preset, runtime, classes=10)(2)


def test_cli_saves_the_batch_found_into_a_derived_preset(monkeypatch, capsys):
    import engine.jobs.batch_search as bs
    from workbench.cli.main import main

    monkeypatch.setattr(bs, "dsr_step", lambda preset, runtime: _fits_up_to(20, []))
    assert main(["find-batch", "--preset", "cpu-demo", "--save-as", "big-batch"]) == 0
    assert "largest dsr.batch_size: 20" in capsys.readouterr().out
    assert P.load("big-batch").dsr.batch_size == 20 and P.load("big-batch").derived_from == "cpu-demo"
    assert main(["find-batch", "--max", "0"]) == 2
