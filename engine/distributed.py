"""Data-parallel training under torchrun: one process per device, rank 0 writes.

``torchrun --nproc_per_node N`` (or ``vlr-workbench ... --nproc N``) sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU) and
picks this rank's device. Without those variables everything here is a cheap no-op (world size 1),
so a trainer has a single code path. Each rank trains on its slice of every global batch
(``shard``); loss sums are all-reduced (``all_reduce_sums``); a stop request on any rank stops all
of them at the same step (``any_rank``), so no rank waits forever in a collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    nodes: int = 1                 # torchrun's nodes (--nnodes): its agents, each with its local processes

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context()
HOST_WAIT = timedelta(hours=12)   # how long ranks wait for rank 0 at a host-side barrier (a long evaluation)
_host_group = None                # a gloo group for host-side agreements (set by ``setup``)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns (context, this rank's device)."""
    if not launched_by_torchrun():
        return SINGLE, device
    world_size = int(os.environ["WORLD_SIZE"])
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE") or world_size)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE") or world_size // per_node)
    ctx = Context(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", 0)), max(1, nodes))
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    global _host_group
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if _host_group is None:
        # host-side agreements (stop requests, rank 0's paths, waiting while rank 0 evaluates) go over gloo
        # with CPU tensors: an NCCL collective read back with .item() would wait for the GPU's whole queue,
        # and NCCL's watchdog would end a wait longer than its 10 minutes
        _host_group = dist.new_group(backend="gloo", timeout=HOST_WAIT)
    return ctx, device


def global_batches(order: torch.Tensor, global_batch: int, ctx: Context) -> list[torch.Tensor]:
    """``order`` in global batches; under torchrun a last batch too small to give every rank an image is
    left out of the epoch (every rank must run every step's collectives)."""
    batches = list(order.split(global_batch))
    if ctx.enabled and batches and len(batches[-1]) < ctx.world_size:
        batches.pop()
    return batches


def check_split_size(length: int, what: str, ctx: Context) -> None:
    """Every rank needs at least one image of a split it shards (else it would skip a collective)."""
    if ctx.enabled and length < ctx.world_size:
        from engine.errors import DataError

        raise DataError(f"the {what} split has {length} images, fewer than the {ctx.world_size} processes that "
                        f"share it. Use fewer processes (--nproc) or a larger {what} split.")


def shard(batch: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This rank's part of a global batch of indices (rank r takes items r, r+N, ...)."""
    return batch[ctx.rank::ctx.world_size] if ctx.enabled else batch


def all_reduce_sums(values: dict[str, torch.Tensor], ctx: Context) -> dict[str, torch.Tensor]:
    """Sum each tensor over the ranks (in place, in one collective); a no-op on one process."""
    if not ctx.enabled or not values:
        return values
    names = sorted(values)
    flat = torch.stack([values[n].detach().float().reshape(()) for n in names])
    dist.all_reduce(flat)
    return {n: flat[i] for i, n in enumerate(names)}


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over the ranks (e.g. a class histogram)."""
    if ctx.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank when ``flag`` is true on at least one (used for stop requests). A CPU tensor over
    gloo: no GPU stream is waited for."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_host_group)
    return bool(value.item() > 0)


def broadcast(obj: Any, ctx: Context) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the path of a recogniser rank 0 chose)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_host_group)
    return box[0]


def barrier(ctx: Context) -> None:
    """Wait for every rank (over gloo, up to ``HOST_WAIT``: the other ranks wait here while rank 0 evaluates)."""
    if ctx.enabled:
        dist.barrier(group=_host_group)


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there is more than one rank."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Socket closed",
             "Connection refused", "Timed out waiting", "NCCL communicator was aborted")


def peer_lost(exc: BaseException) -> str | None:
    """The user's message when ``exc`` says another process of this torchrun job is gone (a node died, was
    killed or lost the network), else None."""
    text = " ".join(str(exc).split())
    distributed_error = isinstance(exc, getattr(dist, "DistError", ())) or "gloo" in text or "NCCL" in text
    if not (dist.is_initialized() and distributed_error and any(sign in text for sign in PEER_GONE)):
        return None
    cause = next(sign for sign in PEER_GONE if sign in text)
    return (f"another process of this {dist.get_world_size()}-process torchrun job is gone ({cause}: a node died, "
            "was killed or lost the network). Every checkpoint this run wrote is intact: start the same torchrun "
            "command on every node with --resume RUN_DIR (the same number of processes) to continue from its "
            "last.pt.")


def cleanup() -> None:
    global _host_group
    _host_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def finish(together: bool) -> None:
    """End of a job under torchrun: wait for every rank (``together``: the job ended alike everywhere; after a
    failure the other ranks may be elsewhere, and torchrun ends them), then destroy the process groups.
    Left to interpreter shutdown, their destruction order is arbitrary and a rank can abort (SIGABRT)."""
    if not dist.is_initialized():
        return
    if together:
        try:
            dist.barrier(group=_host_group)
        except Exception:  # noqa: BLE001 - a peer already gone: nothing left to wait for
            pass
    cleanup()
