"""A split seen through a camera: its VLR images made again from its HR images, one generator per image name."""

from __future__ import annotations

from dataclasses import replace

import torch

from engine.data.camera.chain import degrade_named
from engine.data.camera.spec import Camera

CHUNK = 256   # images moved to the CPU at a time


def camera_vlr(hr: torch.Tensor, vlr_size: tuple[int, int], camera: Camera, seed: int, names: list[str]) -> torch.Tensor:
    """uint8 HR images -> their fixed camera VLR partners (image i seeded by (seed, names[i])), on ``hr``'s device."""
    parts = [degrade_named(hr[start:start + CHUNK].cpu(), vlr_size, camera, seed, names[start:start + CHUNK])[0]
             for start in range(0, hr.shape[0], CHUNK)]
    w, h = vlr_size
    return (torch.cat(parts) if parts else hr.new_empty((0, 3, h, w))).to(hr.device)


def camera_split(split, camera: Camera, seed: int, tag: str):
    """``split`` (a PairedSplit) with ``vlr`` = each HR image through ``camera``, seeded by (seed, tag/name):
    the same images every epoch and every run with that seed (validation sets, test probes)."""
    vlr = camera_vlr(split.hr, split.vlr_size, camera, seed, [f"{tag}/{name}" for name in split.names])
    return replace(split, vlr=vlr.to(split.vlr.device))


def camera_images(hr: torch.Tensor, vlr_size: tuple[int, int], camera: Camera, seed: int, tag: str) -> torch.Tensor:
    """Like :func:`camera_split` for images without names: image i seeded by (seed, tag/i)."""
    return camera_vlr(hr, vlr_size, camera, seed, [f"{tag}/{i}" for i in range(hr.shape[0])])
