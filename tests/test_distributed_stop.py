"""Stops under data parallelism (2 CPU processes, gloo, started with torch.multiprocessing): a stop asked
on one rank only stops every rank at the same agreement step, and a run stopped twice (once mid-epoch,
once at the first agreement step after its resume) ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from engine import presets as P
from engine.jobs.registry import JobRequest, StopFlag, run_job
from engine.runs.records import read_metrics
from engine.train.bookkeeper import STOP_SYNC_STEPS

WORLD = 2
TINY = {"data.vlr_width": 16, "data.vlr_height": 16, "runtime.device": "cpu", "runtime.num_threads": 1,
        "dsr.epochs": 3, "dsr.warmup_epochs": 0, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
        "dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "dsr.batch_size": 2, "dsr.early_stop_patience": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StopAtQuery(StopFlag):
    """A stop asked for on this rank only, the ``n``-th time the flag is read (on rank 1 once a step; rank 0
    reads it through its stop-file check too): the other ranks learn of it at the next agreement step. Rank 1
    emits no events, so no event can trigger it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        if self.left == 0:
            self.set()
        return super().is_set()


def _rank(rank: int, port: int, preset_file: str, data: str | None, options: dict, stop_on: tuple | None,
          out: str) -> None:
    """One rank of a train-dsr job; ``stop_on`` = (rank, n): that rank alone asks for a stop at its n-th step."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    stop = StopAtQuery(stop_on[1]) if stop_on and stop_on[0] == rank else StopFlag()
    result = run_job(JobRequest("train-dsr", P.load(preset_file), data, options), lambda event: None, stop)
    Path(out).write_text(json.dumps({"type": type(result).__name__, "stopped": getattr(result, "stopped", None),
                                     "error": getattr(result, "error", None)}))


def _launch(tmp_path: Path, name: str, preset_file: Path, data: str | None, options: dict,
            stop_on: tuple | None = None) -> list[dict]:
    outs = [tmp_path / f"{name}-rank{r}.json" for r in range(WORLD)]
    port = _free_port()
    context = mp.get_context("spawn")
    procs = [context.Process(target=_rank, args=(r, port, str(preset_file), data, options, stop_on, str(outs[r])),
                             daemon=True) for r in range(WORLD)]
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + 120       # a run takes seconds: longer is a rank stuck in a collective
        for proc in procs:
            proc.join(timeout=max(1.0, deadline - time.monotonic()))
        stuck = [proc for proc in procs if proc.is_alive()]
    finally:                                    # also when the test is interrupted: no rank outlives it
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert not stuck, f"{name}: {len(stuck)} rank(s) still running after 120 s (waiting in a collective?)"
    assert [proc.exitcode for proc in procs] == [0] * WORLD, f"{name}: exit codes {[p.exitcode for p in procs]}"
    return [json.loads(out.read_text()) for out in outs]


def _loop(run_dir: Path) -> dict:
    return torch.load(run_dir / "last.pt", weights_only=True)["loop"]


def _model(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from engine.data.demo import generate_demo_dataset

    return str(generate_demo_dataset(tmp_path_factory.mktemp("ddp-stop") / "data", identities=6, per_identity=4,
                                     seed=0, vlr_size=(16, 16), hr_size=128))


def test_a_stop_on_one_rank_then_a_stop_right_after_the_resume_end_where_an_uninterrupted_run_ends(tmp_path, data):
    preset_file = P.save(P.load("cpu-demo").with_changes({**TINY, "runtime.runs_dir": str(tmp_path / "runs")}),
                         tmp_path / "tiny.toml")
    straight, split = tmp_path / "straight", tmp_path / "split"
    results = _launch(tmp_path, "straight", preset_file, data, {"run_dir": str(straight)})
    assert [r["type"] for r in results] == ["Finished"] * WORLD and not any(r["stopped"] for r in results)

    # rank 1 alone asks, at its 6th step (not an agreement step): both ranks stop at the next one
    results = _launch(tmp_path, "first", preset_file, data, {"run_dir": str(split)}, stop_on=(1, 6))
    assert [r["stopped"] for r in results] == [True] * WORLD, results
    first_stop = _loop(split)
    assert first_stop["global_step"] % STOP_SYNC_STEPS == 0 and first_stop["step_in_epoch"] > 0

    # resumed, rank 0 asks at once: the resume point is an agreement step, so every rank stops there, before
    # any step, and saves the same position again (the epoch's sums as resumed, nothing added)
    results = _launch(tmp_path, "second", preset_file, None, {"resume": str(split)}, stop_on=(0, 1))
    assert [r["stopped"] for r in results] == [True] * WORLD, results
    position = lambda loop: (loop["epoch"], loop["step_in_epoch"], loop["global_step"])  # noqa: E731
    assert position(_loop(split)) == position(first_stop)

    results = _launch(tmp_path, "last", preset_file, None, {"resume": str(split)})
    assert [r["type"] for r in results] == ["Finished"] * WORLD and not any(r["stopped"] for r in results)
    assert _loop(split)["global_step"] == _loop(straight)["global_step"]
    for key, value in _model(straight).items():
        assert torch.allclose(_model(split)[key], value, atol=1e-6), key
    # the epoch sums resumed twice (the second time with no step added) give the uninterrupted epoch's means
    train = {run: [(r["epoch"], r["loss"]) for r in read_metrics(run) if r["split"] == "train"]
             for run in (straight, split)}
    assert [e for e, _ in train[split]] == [e for e, _ in train[straight]] == [1, 2, 3]
    for (_, a), (_, b) in zip(train[split], train[straight]):
        assert a == pytest.approx(b, rel=1e-5)
    val_epochs = Counter(r["epoch"] for r in read_metrics(split) if r["split"] == "val")
    assert val_epochs == Counter({1: 1, 2: 1, 3: 1})          # every epoch once, on rank 0
    summary = json.loads((split / "summary.json").read_text())
    assert summary["world_size"] == WORLD
