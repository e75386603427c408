"""Feature matching: distance between the recogniser's intermediate features of SR and HR."""

from __future__ import annotations

import torch


def feature_match_loss(sr_stages: list[torch.Tensor], hr_stages: list[torch.Tensor]) -> torch.Tensor:
    """Mean over stages of the relative squared error ``|f(SR) - f(HR)|^2 / |f(HR)|^2``.

    Dividing by the HR feature energy puts every stage on the same scale (deep stages have larger
    activations) and makes the value comparable across recognisers: 0 is a perfect match, 1 means
    the error is as large as the HR features themselves.
    """
    if len(sr_stages) != len(hr_stages) or not sr_stages:
        raise ValueError(f"feature matching needs the same non-zero number of SR and HR stages, got "
                         f"{len(sr_stages)} and {len(hr_stages)}")
    terms = []
    for s, h in zip(sr_stages, hr_stages):
        s, h = s.float(), h.float()
        terms.append((s - h).pow(2).mean() / h.pow(2).mean().clamp_min(1e-8))
    return torch.stack(terms).mean()
