"""DSR: a residual super-resolution network from a VLR face (any size) to the HR square.

Layout (EDSR-like, no batch norm): conv in -> ``residual_blocks`` blocks of two 3x3 convs with
``base_channels`` -> conv, added to the input features -> pixel-shuffle x2 stages (conv to 4x the
channels, shuffle, LeakyReLU: a plain ReLU there left the tiny demo networks stuck at bicubic for
longer) -> conv out.
The upsampling factor is the power of two nearest ``hr / max(w, h)``; where it does not land on
the HR size exactly (14x16 -> 112x128) a bilinear resize finishes the job. A global skip adds the
bicubic upscaling of the input, so the network learns only the residual over bicubic and starts
close to the bicubic baseline.

The output is not clamped (clamping would cut gradients); clamp to [0, 1] for metrics and images.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import DataError, WeightsError
from engine.models.resize import PixelShuffleAsConvTranspose, Resize

# Scale of the output conv's initial weights: the residual starts small, so SR ~ bicubic at step 0
# while every layer still receives gradient (a zero init would starve the layers before it).
_TAIL_INIT_SCALE = 0.1


def upscale_bicubic(vlr01: torch.Tensor, hr_size: int) -> torch.Tensor:
    """The bicubic baseline: a [0, 1] batch resized to ``hr_size`` x ``hr_size``, clamped to [0, 1]."""
    up = F.interpolate(vlr01, size=(hr_size, hr_size), mode="bicubic", align_corners=False)
    return up.clamp(0.0, 1.0)


def upscale_factor(vlr_size: tuple[int, int], hr_size: int) -> int:
    """The pixel-shuffle factor: the power of two nearest ``hr_size / max(w, h)`` (at least 1)."""
    ratio = hr_size / max(vlr_size)
    return 2 ** max(0, round(math.log2(ratio)))


class ResidualBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (EDSR's residual scaling keeps deep stacks stable)."""

    def __init__(self, channels: int, res_scale: float = 0.1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class DSRNet(nn.Module):
    def __init__(self, vlr_size: tuple[int, int], hr_size: int = 128, base_channels: int = 128,
                 residual_blocks: int = 16):
        super().__init__()
        self.vlr_size = (int(vlr_size[0]), int(vlr_size[1]))
        self.hr_size = int(hr_size)
        self.base_channels = int(base_channels)
        self.residual_blocks = int(residual_blocks)
        self.factor = upscale_factor(self.vlr_size, self.hr_size)
        c = self.base_channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[ResidualBlock(c) for _ in range(self.residual_blocks)],
                                  nn.Conv2d(c, c, 3, padding=1))
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(self.factor))):
            stages += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2, inplace=True)]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)
        hr = (self.hr_size, self.hr_size)
        self.residual_to_hr = Resize(hr, "bilinear")   # only where the pixel shuffle misses the HR size (14x16)
        self.base_to_hr = Resize(hr, "bicubic")
        with torch.no_grad():
            self.tail.weight.mul_(_TAIL_INIT_SCALE)
            self.tail.bias.zero_()

    @property
    def config(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this network."""
        return {"vlr_size": list(self.vlr_size), "hr_size": self.hr_size, "base_channels": self.base_channels,
                "residual_blocks": self.residual_blocks}

    def forward(self, vlr: torch.Tensor) -> torch.Tensor:
        """[B,3,h,w] in [0, 1] -> [B,3,H,H] (about [0, 1]; not clamped)."""
        h, w = vlr.shape[-2:]
        if (w, h) != self.vlr_size:
            raise DataError(f"this DSR network was trained for VLR images of {self.vlr_size[0]}x{self.vlr_size[1]} "
                            f"(width x height) but got {w}x{h}. Use a DSR checkpoint trained with the same "
                            "data.vlr_width/data.vlr_height as the data, or retrain DSR for this size.")
        features = self.head(vlr)
        features = features + self.body(features)
        residual = self.residual_to_hr(self.tail(self.upsample(features)))
        return self.base_to_hr(vlr) + residual

    def for_deployment(self) -> DSRNet:
        """A copy that computes the same output (up to float rounding) the way ONNX Runtime runs fastest: its
        resizes as constant matrix products for its VLR size, each LeakyReLU before its pixel shuffle (it is
        elementwise: it then fuses into the convolution) and the shuffle as a transposed convolution."""
        fixed = copy.deepcopy(self)
        width, height = self.vlr_size
        fixed.base_to_hr = self.base_to_hr.as_matrices((height, width))
        fixed.residual_to_hr = self.residual_to_hr.as_matrices((height * self.factor, width * self.factor))
        stages: list[nn.Module] = []
        for conv, shuffle, activation in zip(*[iter(fixed.upsample)] * 3):
            stages += [conv, activation, PixelShuffleAsConvTranspose(self.base_channels, shuffle.upscale_factor)]
        fixed.upsample = nn.Sequential(*stages)
        return fixed


def count_trainable_parameters(model: nn.Module) -> int:
    """Trainable parameter count (the true figure; the guide's "~2.3M -> 2.6M" is not it)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_dsr(path: str | Path, device: torch.device | str = "cpu") -> tuple[DSRNet, dict[str, Any]]:
    """Rebuild a DSR network from a ``best.pt``/``last.pt`` checkpoint; returns (model in eval mode, checkpoint)."""
    from engine.io.checkpoints import load_checkpoint

    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"DSR checkpoint {path} not found. Train one with `vlr-workbench train-dsr --preset P` "
                           "(it writes runs/<time>-<preset>-train-dsr/best.pt) and pass that file.")
    checkpoint = load_checkpoint(path, what="DSR checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("kind") != "dsr" or "config" not in checkpoint:
        raise WeightsError(f"{path} is not a DSR checkpoint (expected a dict with kind 'dsr', config and "
                           "state_dict). Use best.pt or last.pt of a train-dsr run.")
    config = _checked_config(checkpoint["config"], path)
    try:
        model = DSRNet(tuple(config["vlr_size"]), config["hr_size"], config["base_channels"],
                       config["residual_blocks"])
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 300 else reason[:300] + "…"
        raise WeightsError(f"DSR checkpoint {path} does not fit its recorded config {config} ({reason}). "
                           "The file was edited or is damaged; retrain or use another run's best.pt.") from None
    return model.to(device).eval(), checkpoint


# Bounds of a checkpoint's config: beyond them a damaged file would build a network too large to allocate.
_CONFIG_LIMITS = {"hr_size": 4096, "base_channels": 4096, "residual_blocks": 1024}


def _checked_config(config: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's ``config`` when it holds sane sizes, else a WeightsError naming the file."""
    def whole(value: Any, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high

    ok = (isinstance(config, dict) and isinstance(config.get("vlr_size"), (list, tuple))
          and len(config["vlr_size"]) == 2 and all(whole(v, 4096) for v in config["vlr_size"])
          and all(whole(config.get(k), high) for k, high in _CONFIG_LIMITS.items()))
    if not ok:
        shown = repr(config)
        shown = shown if len(shown) <= 300 else shown[:300] + "…"
        raise WeightsError(f"DSR checkpoint {path} has a damaged config {shown}: expected vlr_size [w, h], hr_size, "
                           "base_channels and residual_blocks as positive whole numbers. The file was edited or "
                           "is damaged; retrain or use another run's best.pt.")
    return config
