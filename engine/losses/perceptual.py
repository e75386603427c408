"""Perceptual loss: distance between deep features of SR and HR.

Two backbones, picked by ``dsr.perceptual_network``:

- ``vgg19``: torchvision's ImageNet VGG19, features after relu1_2, relu2_2, relu3_4 and relu4_4
  weighted 0.4/0.3/0.2/0.1, on ImageNet-normalised input; L1 distance per layer. The weights are
  never downloaded: they come from ``dsr.vgg19_weights`` or torchvision's cache file
  ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbbb69f.pth``; a missing file stops the run at once.
- ``edgeface``: the frozen recogniser's early stage features (see ``critic``), L1 per stage.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import WeightsError

VGG19_FILE = "vgg19-dcbbb69f.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbbb69f.pth"
# Layer name -> index of that ReLU in torchvision's vgg19().features.
VGG19_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26}
VGG19_LAYER_WEIGHTS = {"relu1_2": 0.4, "relu2_2": 0.3, "relu3_4": 0.2, "relu4_4": 0.1}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Stages of the recogniser used when dsr.perceptual_network = "edgeface", and their weights.
EDGEFACE_STAGE_WEIGHTS = (0.5, 0.5)


def vgg19_weights_path(setting: str = "") -> Path:
    """The file the VGG19 weights are read from: ``dsr.vgg19_weights`` or torchvision's cache."""
    if setting:
        return Path(setting).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def load_vgg19(setting: str = "") -> nn.Module:
    """torchvision's VGG19 with ImageNet weights read from disk; ``WeightsError`` says where to put them."""
    import torchvision

    path = vgg19_weights_path(setting)
    where = ("set dsr.vgg19_weights to the downloaded file's path" if setting else
             f"copy it to {path} (torchvision cache), or set dsr.vgg19_weights to its path")
    fix = (f"Download {VGG19_URL} on a machine with internet and {where}; or set "
           "dsr.perceptual_network = \"edgeface\" (uses the recogniser instead), or dsr.lambda_perceptual = 0.")
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise WeightsError(f"the VGG19 perceptual loss needs ImageNet weights at {path}, which {state}. {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = torchvision.models.vgg19(weights=None)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - unreadable or mismatched file: same fix for the user
        raise WeightsError(f"{path} is not torchvision's VGG19 state dict ({type(exc).__name__}: {exc}). {fix}") from None
    return model


class VGGPerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 ReLU features of SR and HR; the VGG is frozen, gradients reach SR."""

    def __init__(self, vgg: nn.Module, layer_weights: dict[str, float] | None = None):
        super().__init__()
        weights = dict(layer_weights or VGG19_LAYER_WEIGHTS)
        unknown = set(weights) - set(VGG19_LAYERS)
        if unknown:
            raise ValueError(f"unknown VGG19 layers {sorted(unknown)}; known: {list(VGG19_LAYERS)}")
        features = vgg.features if hasattr(vgg, "features") else vgg
        self.taps = {VGG19_LAYERS[name]: (name, w) for name, w in weights.items()}
        self.features = features[: max(self.taps) + 1]
        self.features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        return super().train(False)  # the frozen network always runs in eval mode

    def layer_features(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        """The tapped ReLU outputs of a [0, 1] batch, by layer name."""
        x = (images01 - self.mean) / self.std
        out = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                out[self.taps[index][0]] = x  # each tap is followed by a max-pool, never an in-place op
        return out

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        sr_feats = self.layer_features(sr)
        with torch.no_grad():
            hr_feats = self.layer_features(hr)
        total = sr.new_zeros((), dtype=torch.float32)
        for name, weight in self.taps.values():
            total = total + weight * F.l1_loss(sr_feats[name].float(), hr_feats[name].float())
        return total


def edgeface_perceptual_loss(sr_stages: list[torch.Tensor], hr_stages: list[torch.Tensor]) -> torch.Tensor:
    """L1 between the recogniser's first stage features of SR and HR, weighted per stage."""
    total = sr_stages[0].new_zeros((), dtype=torch.float32)
    for weight, s, h in zip(EDGEFACE_STAGE_WEIGHTS, sr_stages, hr_stages):
        total = total + weight * F.l1_loss(s.float(), h.float())
    return total
