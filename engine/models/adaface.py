"""AdaFace margin head (Kim, Jain and Liu, CVPR 2022): the margin adapts to image quality, read from the norm of
the embedding.

The authors' reading: a face the network embeds with a small norm (blurred, noisy, low resolution: z near -1)
gets ArcFace's angular margin cos(theta + m), which puts less weight on hard samples it cannot learn; a sharp
one (large norm, z near +1) gets cos(theta - m) - 2m, which emphasises its hard samples; z = 0 is CosFace:

    z = clip(h * (||f|| - mean) / (std + eps), -1, 1)   (mean, std: EMA of the batch norms, momentum 0.01)
    target logit = s * (cos(theta_y - m z) - (m + m z));   others s * cos(theta_j)

with theta_y + ... clipped to [eps, pi - eps] as the authors do. The norms are detached (no gradient flows
through the quality estimate). In eval mode the running statistics are frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from engine.models.arcface import COS_EPS, ArcFaceHead

NORM_MOMENTUM = 0.01     # the authors' t_alpha
NORM_CLIP = (0.001, 100.0)
H = 0.333                # the authors' concentration h
EPS = 1e-3


class AdaFaceHead(ArcFaceHead):
    """Class centres like :class:`ArcFaceHead` (same ``cosine`` and state layout plus two statistics buffers)."""

    kind = "adaface"

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.4):
        super().__init__(embedding_dim, num_classes, scale, margin)
        self.register_buffer("norm_mean", torch.tensor(20.0))
        self.register_buffer("norm_std", torch.tensor(100.0))

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits with the quality-adaptive margin on each row's true class (float32)."""
        if norms is None:
            scaler = torch.zeros(cos.shape[0], 1, device=cos.device)
        else:
            norms = norms.detach().float().clamp(*NORM_CLIP).view(-1, 1)
            if self.training:
                with torch.no_grad():
                    self.norm_mean.mul_(1 - NORM_MOMENTUM).add_(NORM_MOMENTUM * norms.mean())
                    std = norms.std() if norms.numel() > 1 else self.norm_std
                    self.norm_std.mul_(1 - NORM_MOMENTUM).add_(NORM_MOMENTUM * std)
            scaler = ((norms - self.norm_mean) / (self.norm_std + EPS) * H).clamp(-1.0, 1.0)
        target = cos.gather(1, labels.view(-1, 1))
        theta = torch.acos(target.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS))
        angular = (theta - self.margin * scaler).clamp(EPS, math.pi - EPS)
        with_margin = torch.cos(angular) - (self.margin + self.margin * scaler)
        return cos.scatter(1, labels.view(-1, 1), with_margin) * self.scale


def margin_head(kind: str, embedding_dim: int, num_classes: int, scale: float, margin: float) -> ArcFaceHead:
    """``finetune.head``: ``arcface`` or ``adaface``."""
    if kind == "adaface":
        return AdaFaceHead(embedding_dim, num_classes, scale, margin)
    return ArcFaceHead(embedding_dim, num_classes, scale, margin)



