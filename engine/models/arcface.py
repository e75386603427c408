"""ArcFace additive angular margin head (Deng et al., 2019), numerically safe at any precision.

logits_j = s * cos(theta_j) for j != y and s * cos(theta_y + m) for the true class y. The cosines
are computed in float32 even under autocast, clamped away from +-1 (acos and its gradient are
infinite there), and where theta_y + m would pass pi (cos(theta + m) would rise again and reward
a worse angle) the target logit falls back to the monotone ``cos(theta) - m * sin(m)``
(insightface's ``easy_margin=False`` rule), so the target logit always decreases with the angle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-6


class ArcFaceHead(nn.Module):
    kind = "arcface"

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.45):
        super().__init__()
        self.embedding_dim, self.num_classes = int(embedding_dim), int(num_classes)
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        # cos(pi - m): below this target cosine, theta + m > pi
        self.threshold = math.cos(math.pi - self.margin)
        self.fallback = math.sin(math.pi - self.margin) * self.margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, num_classes] cosines between embeddings and class centres, float32, clamped inside (-1, 1)."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        return cos.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled logits with the angular margin on each row's true class (float32); ``norms`` (the embeddings'
        norms) are for heads whose margin adapts to them (AdaFace) and unused here."""
        target = cos.gather(1, labels.view(-1, 1))
        sin = torch.sqrt((1.0 - target * target).clamp_min(0.0))
        with_margin = target * math.cos(self.margin) - sin * math.sin(self.margin)  # cos(theta + m)
        with_margin = torch.where(target > self.threshold, with_margin, target - self.fallback)
        logits = cos.scatter(1, labels.view(-1, 1), with_margin)
        return logits * self.scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, num_classes]: ``s * cos`` (inference), with the margin when ``labels`` are given."""
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.scale
        return self.margin_logits(cos, labels)


def arcface_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of margin logits with label smoothing, in float32."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
