"""A split seen through a camera: its VLR images made again from its HR images, one generator per image name."""

from __future__ import annotations

from dataclasses import replace

import torch

from engine.data.camera.chain import degrade_named
from engine.data.camera.spec import Camera

CHUNK = 256   # images moved to the CPU at a time


def camera_split(split, camera: Camera, seed: int, tag: str):
    """``split`` (a PairedSplit) with ``vlr`` = each HR image through ``camera``, seeded by (seed, tag/name):
    the same images every epoch and every run with that seed (validation sets, test probes)."""
    parts = []
    for start in range(0, len(split), CHUNK):
        hr = split.hr[start:start + CHUNK].cpu()
        names = [f"{tag}/{name}" for name in split.names[start:start + CHUNK]]
        parts.append(degrade_named(hr, split.vlr_size, camera, seed, names)[0])
    vlr = torch.cat(parts) if parts else split.vlr
    return replace(split, vlr=vlr.to(split.vlr.device))


def camera_images(hr: torch.Tensor, vlr_size: tuple[int, int], camera: Camera, seed: int, tag: str) -> torch.Tensor:
    """uint8 HR images -> their fixed camera VLR partners (image i seeded by (seed, tag/i)), on ``hr``'s device."""
    parts = []
    for start in range(0, hr.shape[0], CHUNK):
        chunk = hr[start:start + CHUNK].cpu()
        names = [f"{tag}/{start + i}" for i in range(chunk.shape[0])]
        parts.append(degrade_named(chunk, vlr_size, camera, seed, names)[0])
    return torch.cat(parts).to(hr.device) if parts else hr
