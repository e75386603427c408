"""Where a job keeps its decoded uint8 cache: on the GPU when it fits beside the job, else pinned host memory.

``data.cache_on_device = true`` asks for the device. The rule (:func:`choose_placement`): the
device when ``cache_bytes + job_bytes + margin <= free_bytes``, with ``free_bytes`` measured by
``torch.cuda.mem_get_info`` just before training and ``margin`` = :data:`MARGIN_BYTES` (1 GiB:
allocator fragmentation, cuDNN workspaces and autotuning trials), else ``"pinned"``. The guide's
scale shows why: 111,568 pairs at 128x128 are 5.5 GB of uint8, and its 32x32 job needs 7.2 GB at
batch 14: both do not fit on an 8 GB card.

``"pinned"`` keeps the cache where it is (memory-mapped by :mod:`engine.data.disk_cache`) and a
:class:`BatchFeeder` gathers each batch into one of two page-locked staging buffers and copies it
with ``non_blocking=True``: the copy overlaps the previous step's kernels, and host memory grows
by two batches, not by the whole cache. On the CPU there is nothing to place.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch

from engine.data.pairs import PairedSplit

Placement = Literal["device", "pinned"]
LogFn = Callable[[str], None]

MARGIN_BYTES = 1 << 30
GUIDE_JOB_BYTES = 7.2e9     # the guide's 32x32 DSR job at batch 14 (128 channels, 16 blocks, every loss)
GUIDE_BATCH = 14


def choose_placement(cache_bytes: int, free_bytes: int, job_bytes: int, margin: int = MARGIN_BYTES) -> Placement:
    """``"device"`` when the cache, the job's own memory and the margin fit in the free device memory."""
    if min(cache_bytes, free_bytes, job_bytes, margin) < 0:
        raise ValueError("memory figures must be >= 0")
    return "device" if cache_bytes + job_bytes + margin <= free_bytes else "pinned"


def split_bytes(splits: Sequence[PairedSplit]) -> int:
    """Bytes of the uint8 images (and labels) of ``splits``."""
    return sum(s.hr.numel() * s.hr.element_size() + s.vlr.numel() * s.vlr.element_size()
               + s.labels.numel() * s.labels.element_size() for s in splits)


def estimate_job_bytes(batch_size: int) -> int:
    """A job's own device memory when nothing better is known: the guide's 7.2 GB at batch 14,
    scaled with the batch (activations dominate). Generous for small networks: the cache then
    stays pinned on the host, which is correct, only a little slower."""
    return int(GUIDE_JOB_BYTES * max(1, batch_size) / GUIDE_BATCH)


def free_device_bytes(device: torch.device) -> int:
    """Free memory on a CUDA device as the driver sees it (other processes included)."""
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def place_splits(splits: Sequence[PairedSplit], device: torch.device | str, *, job_bytes: int,
                 on_device: bool = True, margin: int = MARGIN_BYTES, log: LogFn | None = None,
                 free_bytes: Callable[[torch.device], int] = free_device_bytes) -> tuple[list[PairedSplit], str]:
    """Move ``splits`` to the device when asked and when they fit; returns (splits, placement).

    placement is ``"device"``, ``"pinned"`` or ``"host"`` (CPU jobs). The choice and the figures
    behind it are logged.
    """
    device = torch.device(device)
    say = log or (lambda message: None)
    splits = list(splits)
    if device.type != "cuda":
        return splits, "host"
    cache = split_bytes(splits)
    if not on_device:
        say(f"data cache: pinned host memory with asynchronous copies ({_gib(cache)} GiB; "
            "data.cache_on_device = false)")
        return splits, "pinned"
    free = free_bytes(device)
    choice = choose_placement(cache, free, job_bytes, margin)
    figures = (f"cache {_gib(cache)} GiB + job ~{_gib(job_bytes)} GiB + margin {_gib(margin)} GiB "
               f"{'<=' if choice == 'device' else '>'} {_gib(free)} GiB free on {device}")
    if choice == "device":
        say(f"data cache: on {device} ({figures})")
        return [s.to(device) for s in splits], "device"
    say(f"data cache: pinned host memory with asynchronous copies, not on {device} ({figures}); "
        "lower the batch size or use a larger card to keep it on the device")
    return splits, "pinned"


class BatchFeeder:
    """Index batches of uint8 images onto the device; from host memory through pinned staging buffers.

    ``feeder(images, index)`` returns ``images[index]`` on ``device``. Host sources are gathered
    into one of two page-locked buffers per source and copied with ``non_blocking=True``; an
    event per buffer keeps a buffer from being refilled while its copy is in flight.
    """

    SLOTS = 2

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._buffers: dict[tuple, list[torch.Tensor]] = {}
        self._events: dict[tuple, list[torch.cuda.Event | None]] = {}
        self._turn: dict[tuple, int] = {}

    @property
    def asynchronous(self) -> bool:
        return self.device.type == "cuda"

    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if images.device == self.device or not self.asynchronous:
            # non_blocking: a blocking copy of the (pageable) index to the GPU would wait for its whole queue
            return images[index.to(images.device, non_blocking=True)].to(self.device)
        index = index.to(images.device)
        source = (images.data_ptr(), tuple(images.shape[1:]), images.dtype)
        turn = self._turn.get(source, 0)
        self._turn[source] = (turn + 1) % self.SLOTS
        key = (*source, turn)
        n = int(index.numel())
        buffers = self._buffers.setdefault(key, [])
        events = self._events.setdefault(key, [None])
        if events[0] is not None:
            events[0].synchronize()  # the copy out of this buffer (two batches ago) is done
        if not buffers or buffers[0].shape[0] < n:
            buffers[:] = [torch.empty((n, *images.shape[1:]), dtype=images.dtype, pin_memory=True)]
        staging = buffers[0][:n]
        torch.index_select(images, 0, index, out=staging)
        out = staging.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        events[0] = event
        return out


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"
