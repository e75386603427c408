"""The opt-in largest-batch search: backs off on out-of-memory, and its result saves into a preset."""

from __future__ import annotations

import pytest
import torch

from engine import presets as P
from engine.errors import WorkbenchError
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
    # a real step of each job at batch 2 runs to the end without running out of memory
    assert largest_batch(dsr_step(preset, runtime), 2, limit=2) == (2, {2: True})
    assert largest_batch(finetune_step(preset, runtime, classes=10), 2, limit=2) == (2, {2: True})


def test_cli_saves_the_batch_found_into_a_derived_preset(monkeypatch, capsys):
    import engine.jobs.batch_search as bs
    from workbench.cli.main import main

    monkeypatch.setattr(bs, "require_cuda", lambda runtime, job: None)   # as on a GPU
    monkeypatch.setattr(bs, "dsr_step", lambda preset, runtime: _fits_up_to(20, []))
    assert main(["find-batch", "--preset", "cpu-demo", "--save-as", "big-batch"]) == 0
    assert "largest dsr.batch_size: 20" in capsys.readouterr().out
    assert P.load("big-batch").dsr.batch_size == 20 and P.load("big-batch").derived_from == "cpu-demo"
    assert main(["find-batch", "--max", "0"]) == 2


@pytest.mark.parametrize("job, key", [("train-dsr", "dsr.batch_size"), ("finetune", "finetune.batch_size")])
def test_cli_refuses_at_once_without_a_cuda_device(monkeypatch, capsys, tmp_path, job, key):
    """On the CPU there is no out-of-memory limit to find: exit 2 before any step runs, saying what to do."""
    import engine.jobs.batch_search as bs
    from workbench.cli.main import main

    def no_step(*args, **kwargs):
        raise AssertionError("find-batch ran a training step on the CPU")

    monkeypatch.setattr(bs, "dsr_step", no_step)
    monkeypatch.setattr(bs, "finetune_step", no_step)
    cpu = P.save(P.load("cpu-demo").with_changes({"runtime.device": "cpu"}), tmp_path / "cpu.toml")
    assert main(["find-batch", "--preset", str(cpu), "--job", job, "--save-as", "never"]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "find-batch needs a CUDA GPU" in err and "no out-of-memory limit to find" in err
    assert f"Set {key} by hand" in err and "Traceback" not in err
    assert "largest" not in captured.out and not (P.user_dir() / "never.toml").exists()
    with pytest.raises(WorkbenchError, match="needs a CUDA GPU"):      # the engine refuses too
        bs.search(P.load(cpu), resolve(P.load(cpu)), job, 8)
