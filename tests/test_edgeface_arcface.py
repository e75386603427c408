"""ArcFace head: logits against the direct formula, the theta + m > pi case, low-precision safety."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.models.arcface import ArcFaceHead, arcface_loss


def _direct(embeddings, weight, labels, s, m):
    """Plain-Python ArcFace: s*cos(theta_y + m) for the true class, s*cos(theta_j) elsewhere."""
    rows = []
    for e, y in zip(embeddings.tolist(), labels.tolist()):
        en = math.sqrt(sum(v * v for v in e))
        row = []
        for j, w in enumerate(weight.tolist()):
            wn = math.sqrt(sum(v * v for v in w))
            c = sum(a * b for a, b in zip(e, w)) / (en * wn)
            if j == y:
                theta = math.acos(max(-1.0, min(1.0, c)))
                c = math.cos(theta + m) if theta + m <= math.pi else c - m * math.sin(m)
            row.append(s * c)
        rows.append(row)
    return torch.tensor(rows)


def test_logits_match_the_direct_formula():
    torch.manual_seed(0)
    head = ArcFaceHead(8, 5, scale=32.0, margin=0.45)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(head(emb, labels), _direct(emb, head.weight.detach(), labels, 32.0, 0.45),
                               atol=1e-3, rtol=1e-4)
    # without labels: plain scaled cosines
    expected = 32.0 * F.normalize(emb, dim=-1) @ F.normalize(head.weight.detach(), dim=-1).T
    torch.testing.assert_close(head(emb), expected, atol=1e-4, rtol=1e-4)


def test_target_angle_beyond_pi_minus_margin_uses_the_monotone_fallback():
    head = ArcFaceHead(2, 2, scale=10.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angles = torch.tensor([0.3, 2.0, 2.7, 3.0])  # theta + m passes pi for the last two
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.zeros(4, dtype=torch.long)
    target = head(emb, labels)[:, 0]
    torch.testing.assert_close(target, _direct(emb, head.weight.detach(), labels, 10.0, 0.5)[:, 0], atol=1e-4,
                               rtol=1e-4)
    assert torch.all(target[1:] < target[:-1])  # still decreasing with the angle: a worse angle never pays
    assert torch.all(target <= 10.0 * torch.cos(angles))  # the margin never helps the true class


def test_gradients_stay_finite_at_cosines_of_plus_minus_one():
    head = ArcFaceHead(4, 3, scale=64.0, margin=0.5)
    emb = torch.cat([head.weight.detach()[:1] * 3, -head.weight.detach()[1:2]]).requires_grad_(True)
    loss = arcface_loss(head(emb, torch.tensor([0, 1])), torch.tensor([0, 1]), label_smoothing=0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_embeddings_give_float32_logits_without_nan(dtype):
    torch.manual_seed(0)
    head = ArcFaceHead(512, 100, scale=64.0, margin=0.5)
    emb = (torch.randn(16, 512) * 300).to(dtype).requires_grad_(True)  # large norms, as fp16 backbones give
    labels = torch.randint(0, 100, (16,))
    logits = head(emb, labels)
    assert logits.dtype == torch.float32
    loss = arcface_loss(logits, labels, label_smoothing=0.08)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad.float()).all()
    ref = head(emb.detach().float(), labels)
    torch.testing.assert_close(logits, ref, atol=0.2, rtol=0.01)


def test_label_smoothing_matches_cross_entropy_definition():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    eps = 0.08
    logp = logits.log_softmax(-1)
    manual = -((1 - eps) * logp.gather(1, labels[:, None]).squeeze(1) + eps * logp.mean(-1)).mean()
    torch.testing.assert_close(arcface_loss(logits, labels, eps), manual)


def test_margin_training_separates_classes_on_toy_embeddings():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 16), dim=-1)
    labels = torch.arange(4).repeat(16)
    emb = centres[labels] + 0.3 * torch.randn(64, 16)
    head = ArcFaceHead(16, 4, scale=16.0, margin=0.3)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = None
    for _ in range(60):
        loss = arcface_loss(head(emb, labels), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5
    assert (head(emb).argmax(1) == labels).float().mean() > 0.9
