"""What every trainer does around its loop, so that a trainer file is the loop and nothing else.

``Bookkeeper`` owns the run directory (its lock, ``status.json`` heartbeat, metrics.jsonl, summary,
checkpoints), throughput and ETA, Progress events, the stop request (the app's flag, Ctrl-C, a
``stop.request`` file from another front end, agreed by every rank under torchrun), the count of
non-finite steps (skipped on the device by ``update.OptimizerUpdate``, read here every few steps),
and out-of-memory errors. Under torchrun only rank 0 writes or emits.

The position a resume continues from is ``engine.train.loop_state.LoopState``; what --resume reads is
``engine.train.resume``; the epoch loop itself is ``engine.train.loop.fit``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from engine import distributed
from engine.io import atomic
from engine.distributed import Context
from engine.errors import JobStopped, WorkbenchError
from engine.events import Emit, Finished, Log, Metrics, Progress, ignore
from engine.jobs.registry import StopFlag
from engine.presets import Preset
from engine.runs.lifecycle import RunLifecycle
from engine.runs.status import STATUS_FILE, RunLock
from engine.runs.run_dir import PROGRESS_FILE, RunDir
from engine.train.loop_state import LoopState, Sums
from engine.train.oom import out_of_memory
from engine.train.resume import Resume, rng_state
from engine.train.update import NonFiniteCount

PROGRESS_UPDATES = 20          # Progress events per epoch (about)
STOP_SYNC_STEPS = 4            # under torchrun, ranks agree on a stop every N steps (a collective each time)
MAX_NONFINITE_STEPS = 10       # consecutive steps with a non-finite loss or gradient before the job stops
                               # (noticed at the next progress report: the skipped steps changed nothing)


def main_only(emit: Emit, ctx: Context) -> Emit:
    """``emit`` on rank 0; ranks other than 0 say nothing."""
    return emit if ctx.is_main else ignore


# ----------------------------------------------------------------------------- the bookkeeper


def non_finite_weight(checkpoint: dict[str, Any]) -> str | None:
    """``entry.key`` of the first non-finite floating-point tensor in any state dict of ``checkpoint`` (a
    top-level mapping of tensors: ``state_dict``, DSR's ``model``, a head), else None."""
    for entry, value in checkpoint.items():
        if isinstance(value, dict) and value and all(torch.is_tensor(t) for t in value.values()):
            for key, tensor in value.items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    return f"{entry}.{key}"
    return None


class Bookkeeper:
    """Run directory, status, events and stop requests of one training job (rank 0 writes)."""

    def __init__(self, job: str, run: RunDir, emit: Emit, stop: StopFlag, ctx: Context, device: torch.device,
                 state: LoopState, lr_keys: str = "the learning rate", lock: RunLock | None = None) -> None:
        self.job, self.run, self.ctx, self.device, self.state = job, run, ctx, device, state
        self.lr_keys = lr_keys     # named in the instability advice
        self._emit = emit
        # the lock (held by rank 0, taken in ``open``), status.json, stop requests (also `vlr-workbench stop`)
        self.life = RunLifecycle(run.path, job, stop, main=ctx.is_main, world_size=ctx.world_size, lock=lock)
        self.stop, self.status = self.life.stop, self.life.status
        self.images = 0            # training images (all ranks) this session
        self.seconds = 0.0         # training seconds this session (validation and checkpoints excluded)
        self._clock = time.perf_counter()
        self.nonfinite = NonFiniteCount(device)   # steps skipped on the device, read at progress cadence

    @classmethod
    def open(cls, job: str, preset: Preset, emit: Emit, stop: StopFlag, ctx: Context, device: torch.device, *,
             run_dir: str | Path | None = None, resume: Resume | None = None,
             lr_keys: str = "the learning rate") -> "Bookkeeper":
        """A new run directory (rank 0 makes it; the others learn its path), or the resumed one.

        Rank 0 takes the directory's lock before it writes anything there, so a second job given the
        same directory fails at once instead of merging its files into this run's.
        """
        lock, notes = RunLock(Path(run_dir or "") if resume is None else resume.run.path), []
        if resume is not None:
            run, state = resume.run, resume.state
            if ctx.is_main:
                notes.append(lock.acquire())
        else:
            path = None
            if ctx.is_main and run_dir:
                Path(run_dir).expanduser().mkdir(parents=True, exist_ok=True)
                lock = RunLock(Path(run_dir).expanduser())
                notes.append(lock.acquire())
                try:
                    path = RunDir.for_job(preset, job, run_dir).path
                except BaseException:
                    lock.release()
                    raise
            elif ctx.is_main:
                path = RunDir.create(preset.runtime.runs_dir, preset, job).path
                lock = RunLock(path)
                notes.append(lock.acquire())
            run, state = RunDir(Path(distributed.broadcast(str(path) if path else None, ctx))), LoopState()
        before, book = _status_bytes(run.path) if resume is not None and ctx.is_main else None, None
        try:
            if resume is not None and int(resume.checkpoint.get("world_size", 1)) != ctx.world_size:
                raise WorkbenchError(
                    f"{run.path} was trained by {resume.checkpoint.get('world_size', 1)} process(es) and this resume "
                    f"has {ctx.world_size}: the epoch position and schedule count global batches of that many. "
                    f"Resume with the same --nproc ({resume.checkpoint.get('world_size', 1)}).")
            book = cls(job, run, emit, stop, ctx, device, state, lr_keys, lock)
            if ctx.is_main:
                for note in filter(None, notes):
                    book.log(note, "warning")
                removed = len(atomic.remove_stale_temps(run.path))
                if removed:
                    book.log(f"removed {removed} partial file(s) left by a killed writer in {run.path}")
                # a fresh start in a directory left by an attempt killed before its first last.pt drops that
                # attempt's records (step 0 keeps none), like a resume drops what its last.pt does not hold
                if resume is not None or run.metrics_path.is_file() or (run.path / PROGRESS_FILE).is_file():
                    dropped = run.truncate_metrics(state.global_step)
                    if dropped:
                        book.log(f"metrics.jsonl: dropped {dropped} record(s) logged after last.pt (step "
                                 f"{state.global_step}); the resumed run logs them again")
        except BaseException:
            if book is not None and before is not None:   # a resume that cannot start leaves the run as it was
                book.status.hand_over()
                with book.status._lock:   # after any heartbeat write in progress
                    _restore_status(run.path, before)
            lock.release()
            raise
        return book

    # -- events (rank 0 only)

    def emit(self, event) -> None:
        if self.ctx.is_main:
            if isinstance(event, Log):   # kept for front ends that attach to the run later
                self.run.log_line(event)
            self._emit(event)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Log(self.job, message, level))

    def report(self, stage: str, epoch: int, split: str, values: dict[str, float]) -> None:
        """One Metrics record: metrics.jsonl, the event, and the status."""
        event = Metrics(self.job, stage, epoch, self.state.global_step, split, values)
        if self.ctx.is_main:
            self.run.log_metrics(event)
        self.emit(event)

    # -- the step

    def check_stop(self) -> None:
        """Raise JobStopped when a stop was asked for (the flag, or a stop.request file); all ranks agree."""
        wanted = self.stop.is_set()
        if self.ctx.enabled and self.state.global_step % STOP_SYNC_STEPS == 0:
            wanted = distributed.any_rank(wanted, self.ctx)
        elif self.ctx.enabled:
            wanted = False  # decided together at the next agreement step
        if wanted:
            raise JobStopped()

    def restart_clock(self) -> None:
        """Call before an epoch's first step: validation and checkpoint time are not training time."""
        self._clock = time.perf_counter()

    def step_done(self, stage: str, epoch: int, epochs: int, step: int, steps: int, local_images: int,
                  images_left: int, loss: torch.Tensor) -> None:
        """Count a finished step; every few steps a Progress event and a status heartbeat."""
        now = time.perf_counter()
        self.images += local_images * self.ctx.world_size
        self.seconds += now - self._clock
        self._clock = now
        self.state.global_step += 1
        self.state.step_in_epoch = step
        if step % max(1, steps // PROGRESS_UPDATES) == 0 or step == steps:   # the loop's only host syncs
            self.read_nonfinite()
            rate = self.images_per_second
            event = Progress(self.job, stage, epoch, epochs, step, steps, rate, images_left / rate if rate else None,
                             loss.item())
            self.emit(event)
            if self.ctx.is_main:   # for front ends that follow the run from its directory (the app's own-process jobs)
                self.run.log_progress(event, self.state.global_step)
            self.status.update(stage=stage, epoch=epoch, epochs=epochs, step=step, steps=steps,
                               global_step=self.state.global_step, images_per_second=round(rate, 2))

    def read_nonfinite(self, check: bool = True) -> None:
        """Add the steps skipped on the device since the last read to the state (one host sync); a run of
        ``MAX_NONFINITE_STEPS`` in a row stops the job with the instability advice (``check``)."""
        skipped, longest = self.nonfinite.read()
        self.state.skipped_steps += skipped
        if check and longest >= MAX_NONFINITE_STEPS:
            raise self.unstable(f"{longest} steps in a row")

    def check_epoch_trained(self, stage: str, epoch: int, images_trained: int) -> None:
        """An epoch whose every step was skipped (non-finite) trained nothing: stop with the instability advice."""
        self.read_nonfinite()
        if images_trained == 0:
            raise self.unstable(f"every step of {stage} epoch {epoch}")

    def unstable(self, which: str) -> WorkbenchError:
        return WorkbenchError(
            f"{self.job} is unstable: {which} had a non-finite loss or gradient ({self.state.skipped_steps} steps "
            f"skipped in all); the weights were left as they were. Lower {self.lr_keys} (halve it), keep gradient "
            "clipping on, or set runtime.amp = \"bf16\" or \"off\" when it is fp16; "
            f"`vlr-workbench tips {self.run.path}` proposes the change.")

    def on_stop(self, sums: Sums, save_last) -> None:
        """A stop request: keep the unfinished epoch's partial sums, save last.pt, say how to resume."""
        state = self.state
        self.read_nonfinite(check=False)
        state.epoch_sums = sums.state(self.ctx) if state.step_in_epoch else None
        save_last()
        self.log(f"stopped in {state.stage} epoch {state.epoch + 1} after step {state.step_in_epoch}; "
                 f"`vlr-workbench {self.job} --resume {self.run.path}` continues from there", "warning")

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @contextlib.contextmanager
    def oom_guard(self, stage: str, epoch: int, batch_key: str, batch_size: int) -> Iterator[None]:
        """An out-of-memory error anywhere inside (training or validation) becomes the guide's batch advice."""
        try:
            yield
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            run = self.run if self.ctx.is_main else _NoRun(self.run.path)
            raise out_of_memory(run, self.job, stage, epoch, batch_key, batch_size, exc) from None

    # -- files (rank 0 only)

    def save(self, name: str, checkpoint: dict[str, Any]) -> Path:
        """Write a checkpoint atomically; a checkpoint with non-finite weights is never written."""
        path = self.run.path / name
        key = non_finite_weight(checkpoint)          # every rank: they hold the same weights
        if key is not None:
            raise WorkbenchError(f"{self.job}: the weights became non-finite ({key}); {path} was not "
                                 "written and the previous one is intact. Lower the learning rate and "
                                 f"resume or start again (`vlr-workbench tips {self.run.path}`).")
        if self.ctx.is_main:
            atomic.torch_save(path, checkpoint)
        return path

    def save_last(self, checkpoint: dict[str, Any], generator: torch.Generator) -> Path:
        """last.pt: the checkpoint plus where the loop stands and the random state, for --resume."""
        checkpoint.update(job=self.job, loop=self.state.to_dict(), rng=rng_state(generator),
                          world_size=self.ctx.world_size)
        return self.save("last.pt", checkpoint)

    def summary_extra(self) -> dict[str, Any]:
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return {"world_size": self.ctx.world_size, "nodes": self.ctx.nodes, "images_per_second": round(self.images_per_second, 2),
                "global_step": self.state.global_step, "skipped_steps": self.state.skipped_steps,
                "peak_device_memory_mb": round(peak / 2**20, 1) if peak else None}

    def finish(self, summary: dict[str, Any], *, stopped: bool) -> Finished:
        """Write summary.json, end the status (finished or stopped) and release the directory (called inside
        ``lifetime``, which marks the run failed when the summary cannot be written)."""
        if self.ctx.is_main:
            self.run.write_summary(summary)
        self.life.end("stopped" if stopped else "finished")
        return Finished(self.job, self.run.path, summary, stopped=stopped)

    def lifetime(self):
        """The run's end on a stop or an error (``RunLifecycle.lifetime``)."""
        return self.life.lifetime()


class _NoRun:
    """A RunDir stand-in for ranks other than 0: records nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log_error(self, *args, **kwargs) -> None:
        pass


def _status_bytes(run_path: Path) -> bytes | None:
    """status.json as it is (None: none), so a resume that fails before it starts can put it back."""
    try:
        return (run_path / STATUS_FILE).read_bytes()
    except OSError:
        return None


def _restore_status(run_path: Path, before: bytes | None) -> None:
    with contextlib.suppress(OSError):
        if before is None:
            (run_path / STATUS_FILE).unlink(missing_ok=True)
        else:
            atomic.write_bytes(run_path / STATUS_FILE, before)
