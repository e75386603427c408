"""The DSR objective: the preset's weighted sum of L1, perceptual, identity, feature-matching and TV terms.

``DSRCriterion`` returns the weighted total (for backward) and the *unweighted* value of every
term it could compute (for metrics.jsonl). A term whose weight is 0 is still reported when its
network is at hand (the recogniser runs anyway for another term), never otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.losses.feature_match import feature_match_loss
from engine.losses.identity import identity_loss
from engine.losses.perceptual import VGGPerceptualLoss, edgeface_perceptual_loss, load_vgg19
from engine.losses.pixel import l1_loss
from engine.losses.tv import tv_loss


@dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    perceptual: float = 0.0
    identity: float = 0.0
    feature_match: float = 0.0
    tv: float = 0.0
    perceptual_network: str = "vgg19"

    @classmethod
    def from_config(cls, dsr) -> "LossWeights":
        """From a preset's ``[dsr]`` section."""
        return cls(dsr.lambda_l1, dsr.lambda_perceptual, dsr.lambda_identity, dsr.lambda_feature_match,
                   dsr.lambda_tv, dsr.perceptual_network)

    @property
    def needs_recogniser(self) -> bool:
        return (self.identity > 0 or self.feature_match > 0
                or (self.perceptual > 0 and self.perceptual_network == "edgeface"))

    @property
    def needs_vgg(self) -> bool:
        return self.perceptual > 0 and self.perceptual_network == "vgg19"


class DSRCriterion(nn.Module):
    def __init__(self, weights: LossWeights, *, vgg: VGGPerceptualLoss | None = None,
                 critic: nn.Module | None = None):
        super().__init__()
        if weights.needs_vgg and vgg is None:
            raise ValueError("dsr.lambda_perceptual > 0 with vgg19 needs the VGG perceptual module")
        if weights.needs_recogniser and critic is None:
            raise ValueError("identity/feature-match/edgeface-perceptual losses need the frozen recogniser")
        self.weights = weights
        self.vgg = vgg
        self.critic = critic

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted total with grad, {term: unweighted value, detached})."""
        w = self.weights
        terms: dict[str, torch.Tensor] = {"l1": l1_loss(sr, hr), "tv": tv_loss(sr)}
        total = w.l1 * terms["l1"] + w.tv * terms["tv"]
        if self.vgg is not None and w.perceptual_network == "vgg19":
            terms["perceptual"] = self.vgg(sr, hr)
            total = total + w.perceptual * terms["perceptual"]
        if self.critic is not None:
            out = self.critic(sr, hr)
            terms["identity"] = identity_loss(out.sr_embedding, out.hr_embedding)
            terms["feature_match"] = feature_match_loss(out.sr_stages, out.hr_stages)
            total = total + w.identity * terms["identity"] + w.feature_match * terms["feature_match"]
            if w.perceptual_network == "edgeface":
                terms["perceptual"] = edgeface_perceptual_loss(out.sr_stages, out.hr_stages)
                total = total + w.perceptual * terms["perceptual"]
        return total, {name: value.detach().float() for name, value in terms.items()}


def build_criterion(dsr, recogniser: nn.Module | None, device: torch.device, *,
                    vgg: nn.Module | None = None) -> DSRCriterion:
    """The criterion of a preset's ``[dsr]`` section.

    ``recogniser`` (an EdgeFace, frozen here) is required when ``LossWeights.needs_recogniser``;
    ``vgg`` (torchvision's VGG19) is read from disk with :func:`load_vgg19` when needed and not given.
    """
    from engine.losses.critic import FrozenRecogniser

    weights = LossWeights.from_config(dsr)
    perceptual = None
    if weights.needs_vgg:
        perceptual = VGGPerceptualLoss(vgg if vgg is not None else load_vgg19(dsr.vgg19_weights)).to(device)
    critic = FrozenRecogniser(recogniser).to(device) if recogniser is not None else None
    return DSRCriterion(weights, vgg=perceptual, critic=critic)
