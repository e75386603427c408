"""Issue 15's trainer-side defects, each a regression test: one job per run directory, resume on the
run's own data, exact resume after a mid-epoch stop, no duplicated epochs, temp files cleaned, a
full disk during a job, non-finite steps, and the divergence message (issue 17 defect 5)."""

from __future__ import annotations

import errno
import json
import os
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch

from engine import presets
from engine.data.demo import generate_demo_dataset
from engine.events import Failed, Finished, Log, Progress
from engine.jobs.registry import JobRequest, StopFlag, run_job
from engine.runs.status import LOCK_FILE, RunLock
from engine.runs.records import read_metrics
from tiny import tiny_dsr_preset



@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("rel")
    make = lambda name, seed: generate_demo_dataset(base / name, identities=8, per_identity=4, seed=seed,  # noqa: E731
                                                    vlr_size=(8, 8), hr_size=32)
    return make("a", 0), make("b", 1)


@pytest.fixture
def preset(tmp_path):
    return tiny_dsr_preset(tmp_path / "runs", **{"dsr.batch_size": 4, "dsr.ema_decay": 0.9,
                                                 "dsr.early_stop_patience": 0})


def _dsr(preset, data, emit=lambda e: None, stop=None, **options) -> Finished | Failed:
    return run_job(JobRequest("train-dsr", preset, str(data) if data else None, options), emit, stop)


def _val_epochs(run_dir: Path) -> Counter:
    return Counter(r["epoch"] for r in read_metrics(run_dir) if r["split"] == "val")


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


# ----------------------------------------------------------------------------- 2: one job per run directory


def test_a_live_owner_keeps_the_run_directory_and_a_dead_ones_lock_is_taken_over(preset, roots, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "time": 0}))
    result = _dsr(preset, roots[0], epochs=1, run_dir=str(run_dir))
    assert isinstance(result, Failed) and "in use by another job" in result.error
    assert not (run_dir / "preset.toml").exists() and not (run_dir / "metrics.jsonl").exists()  # nothing written

    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "time": 0}))
    events: list = []
    result = _dsr(preset, roots[0], events.append, epochs=1, run_dir=str(run_dir))
    assert isinstance(result, Finished), getattr(result, "error", "")
    assert any(isinstance(e, Log) and "took over" in e.message for e in events)
    assert not (run_dir / LOCK_FILE).exists()     # released at the end


def test_two_locks_on_one_directory_cannot_both_be_held(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire() == ""
    with pytest.raises(Exception, match="in use by another job"):
        second.acquire()
    first.release()
    assert second.acquire() == "" and second.held


def _take_over(run_dir, start, done, results):
    lock = RunLock(run_dir)
    start.wait()
    try:
        lock.acquire()
    except Exception:  # noqa: BLE001 - "in use": another process won
        pass
    results.put(lock.held)
    done.wait()              # hold it until every process has tried


def test_a_dead_owners_lock_is_taken_over_by_exactly_one_of_many_racing_processes(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    racers = 6
    for round_ in range(8):
        run_dir = tmp_path / f"run{round_}"
        run_dir.mkdir()
        (run_dir / LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "time": 0}))
        start, done, results = ctx.Barrier(racers), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_take_over, args=(run_dir, start, done, results)) for _ in range(racers)]
        for proc in procs:
            proc.start()
        held = [results.get(timeout=30) for _ in procs]
        done.set()
        for proc in procs:
            proc.join(timeout=30)
        assert held.count(True) == 1, f"round {round_}: {held.count(True)} processes hold the lock"


# ----------------------------------------------------------------------------- 4: resume on the run's own data


def test_resume_uses_the_runs_recorded_data_and_refuses_other_data_unless_told(preset, roots, tmp_path):
    run_dir = tmp_path / "run"
    assert isinstance(_dsr(preset, roots[0], epochs=1, run_dir=str(run_dir)), Finished)
    events: list = []
    resumed = _dsr(preset, None, events.append, epochs=2, resume=str(run_dir))   # no --data: the run's own
    assert isinstance(resumed, Finished), getattr(resumed, "error", "")
    assert any(isinstance(e, Log) and str(roots[0]) in e.message for e in events)
    assert "built-in demo faces" not in " ".join(e.message for e in events if isinstance(e, Log))

    other = _dsr(preset, roots[1], epochs=3, resume=str(run_dir))
    assert isinstance(other, Failed) and "--allow-other-data" in other.error and str(roots[1]) in other.error
    allowed = _dsr(preset, roots[1], epochs=3, resume=str(run_dir), allow_other_data=True)
    assert isinstance(allowed, Finished), getattr(allowed, "error", "")


# ----------------------------------------------------------------------------- 5, 6, 12: exact resume


def test_a_stop_mid_epoch_then_resume_matches_an_uninterrupted_run(preset, roots, tmp_path):
    straight = _dsr(preset, roots[0], epochs=3, run_dir=str(tmp_path / "straight"))
    assert isinstance(straight, Finished)
    stop = StopFlag()

    def emit(event):   # stop inside epoch 2, after its second step
        if isinstance(event, Progress) and event.stage == "dsr" and event.epoch == 2 and event.step == 2:
            stop.set()

    split = tmp_path / "split"
    first = _dsr(preset, roots[0], emit, stop, epochs=3, run_dir=str(split))
    assert isinstance(first, Finished) and first.stopped
    loop = torch.load(split / "last.pt", weights_only=True)["loop"]
    assert (loop["epoch"], loop["step_in_epoch"]) == (1, 2)
    (split / ".last.pt.abcd1234.tmp").write_bytes(b"half a checkpoint")   # a writer killed mid-write
    resumed = _dsr(preset, None, resume=str(split))
    assert isinstance(resumed, Finished) and not resumed.stopped
    assert resumed.summary["global_step"] == straight.summary["global_step"]     # 18 steps, not 19
    for key, value in _weights(tmp_path / "straight").items():
        assert torch.allclose(_weights(split)[key], value, atol=1e-6), key
    assert _val_epochs(split) == Counter({1: 1, 2: 1, 3: 1})
    assert not list(split.glob(".*.tmp"))


def test_records_logged_after_last_pt_are_dropped_on_resume(preset, roots, tmp_path):
    run_dir = tmp_path / "run"
    assert isinstance(_dsr(preset, roots[0], epochs=1, run_dir=str(run_dir)), Finished)
    # a process killed after logging epoch 2 but before saving its last.pt leaves these behind
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"job": "train-dsr", "stage": "dsr", "epoch": 2, "step": 10**6, "split": "val",
                                 "psnr": 1.0}) + "\n")
        handle.write('{"job": "train-dsr", "epo')   # and half a line
    assert isinstance(_dsr(preset, None, epochs=2, resume=str(run_dir)), Finished)
    assert _val_epochs(run_dir) == Counter({1: 1, 2: 1})
    assert all(r.get("psnr") != 1.0 for r in read_metrics(run_dir))


# ----------------------------------------------------------------------------- 8: a full disk during a job


def test_a_full_disk_while_logging_is_a_clean_error(preset, roots, tmp_path, monkeypatch):
    from engine.runs.run_dir import RunDir

    def full(self, record, path=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path or self.metrics_path))

    monkeypatch.setattr(RunDir, "_append", full)
    result = _dsr(preset, roots[0], epochs=1, run_dir=str(tmp_path / "run"))
    assert isinstance(result, Failed) and result.traceback is None
    assert "disk is full" in result.error and str(tmp_path / "run") in result.error


# ----------------------------------------------------------------------------- non-finite steps, divergence


def test_non_finite_steps_are_skipped_then_stop_the_job_and_no_non_finite_weights_are_saved(preset, roots, tmp_path,
                                                                                            monkeypatch):
    import engine.train.dsr as dsr

    real = dsr.build_criterion

    def poisoned(*args, **kwargs):
        criterion = real(*args, **kwargs)

        class NaNAfterWarmup(torch.nn.Module):
            calls = 0

            def forward(self, sr, hr):
                NaNAfterWarmup.calls += 1
                loss, terms = criterion(sr, hr)
                return (loss * float("nan"), terms) if self.training else (loss, terms)
        module = NaNAfterWarmup()
        return module

    monkeypatch.setattr(dsr, "build_criterion", poisoned)
    result = _dsr(preset, roots[0], epochs=2, run_dir=str(tmp_path / "run"))
    assert isinstance(result, Failed) and "unstable" in result.error and "dsr.learning_rate" in result.error
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"
    assert not (tmp_path / "run" / "last.pt").exists()   # nothing finite to save: no epoch ended


def test_the_divergence_error_names_only_files_that_exist_and_fp16_only_when_on(preset, roots, tmp_path,
                                                                               monkeypatch):
    import engine.train.dsr as dsr

    monkeypatch.setattr(dsr, "validate", lambda *a, **k: {"loss": float("nan"), "psnr": float("nan"), "ssim": 0.0})
    result = _dsr(preset, roots[0], epochs=2, run_dir=str(tmp_path / "run"))
    assert isinstance(result, Failed) and "diverged at epoch 1" in result.error
    assert "last.pt" not in result.error            # none was written yet (defect 5 of issue 17)
    assert "fp16" not in result.error               # AMP is off on the CPU


def test_evaluate_names_a_missing_weights_file_before_building_demo_faces(tmp_path):
    from engine.io.paths import cache_dir

    missing = presets.load("cpu-demo").with_changes({"runtime.edgeface_weights": str(tmp_path / "nope.pt")})
    before = set(cache_dir().rglob("*")) if cache_dir().exists() else set()
    result = run_job(JobRequest("evaluate", missing), lambda e: None)
    assert isinstance(result, Failed) and "runtime.edgeface_weights" in result.error and "nope.pt" in result.error
    after = set(cache_dir().rglob("*")) if cache_dir().exists() else set()
    assert not any(p.suffix == ".png" for p in after - before)   # no demo image was generated first


# ----------------------------------------------------------------------------- review fixes: order, stop file, lock


def test_augmentation_draws_differ_between_ranks_and_repeat_at_the_same_step_after_a_resume():
    from engine.data.augment import PairedAugment
    from engine.train.loop_state import LoopState

    augment = PairedAugment(1.0, 20.0, 1.0, (0.5, 1.5), (0.5, 1.5), (0.5, 1.5))
    vlr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    state = LoopState(global_step=7)

    def draws(rank: int, loop: LoopState) -> torch.Tensor:
        return augment(vlr, hr, loop.step_generator(torch.Generator(), seed=42, rank=rank))[1]

    rank0, rank1 = draws(0, state), draws(1, state)
    assert not torch.allclose(rank0, rank1)                      # each rank its own draws
    resumed = LoopState.from_dict(state.to_dict())                # a resume at the same step, any rank
    assert torch.equal(draws(1, resumed), rank1) and torch.equal(draws(0, resumed), rank0)
    assert not torch.allclose(draws(0, LoopState(global_step=8)), rank0)   # the next step draws anew


def test_the_epoch_order_depends_only_on_seed_stage_and_epoch_and_survives_a_stop_at_step_zero():
    from engine.train.loop_state import LoopState

    a, b = LoopState(), LoopState()
    torch.rand(17)  # whatever the ranks' augmentation drew, their orders agree
    first = a.start_epoch("dsr", 1, 11, seed=42)
    assert torch.equal(first, b.start_epoch("dsr", 1, 11, seed=42))
    assert not torch.equal(first, LoopState().start_epoch("dsr", 2, 11, seed=42))
    stopped = LoopState.from_dict(a.to_dict())          # stopped before the epoch's first step (step 0)
    assert torch.equal(stopped.start_epoch("dsr", 1, 11, seed=42), first)


def test_a_stop_request_file_reaches_a_flag_handed_to_stage_jobs(tmp_path):
    from engine.runs.status import FileStop, request_stop

    flag = FileStop(StopFlag(), tmp_path)
    assert not flag.is_set()
    request_stop(tmp_path)
    flag._polled = 0.0
    assert flag.is_set()
    with pytest.raises(Exception):
        flag.check()


def test_a_failure_while_writing_the_failed_status_still_frees_the_run_directory(preset, roots, tmp_path, monkeypatch):
    from engine.runs import status as run_status
    from engine.errors import StorageError

    real_end = run_status.StatusWriter.end

    def end(self, state, message=""):
        if state == "failed":
            raise StorageError("cannot write status.json: the disk is full")
        return real_end(self, state, message)

    monkeypatch.setattr(run_status.StatusWriter, "end", end)
    monkeypatch.setattr("engine.train.dsr.validate", lambda *a, **k: {"loss": float("nan"), "psnr": float("nan")})
    result = _dsr(preset, roots[0], epochs=1, run_dir=str(tmp_path / "run"))
    assert isinstance(result, Failed) and not (tmp_path / "run" / LOCK_FILE).exists()
