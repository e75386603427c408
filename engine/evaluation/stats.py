"""Uncertainty of the evaluation figures: bootstrap over test subjects and the exact McNemar test.

**Bootstrap** (percentile, 95% by default): each resample draws the test subjects with
replacement (as many as there are) and weights every probe by how often its subject was drawn;
the gallery templates stay fixed. A subject, not a probe, is the unit because the probes of one
subject are not independent (same face, same enrolment). All rows of one evaluation use the
*same* resamples, so differences between rows are paired. Everything is vectorised over the
resamples (a [B, P] weight matrix): 1000 resamples of a few hundred probes take milliseconds.

**McNemar** (exact, two-sided): on the same probes, ``b`` = probes right in row A and wrong in
row B, ``c`` = the opposite; under "no difference" ``b ~ Binomial(b + c, 1/2)``, so
``p = min(1, 2 * P(X <= min(b, c)))``. E.g. b=1, c=9: p = 2 * 11/1024 = 0.021484375.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
ALPHA = 0.05                     # a McNemar p below this is "significant"
_CHUNK_ELEMENTS = 4_000_000      # resamples x trials per chunk of the verification bootstrap
EXACT_WORK = 50_000_000         # resamples x trials up to which EER/TAR are bootstrapped exactly (~1 s)
VERIFICATION_BINS = 2048        # beyond: thresholds at this many score quantiles
METHOD = ("percentile bootstrap over test subjects: each resample draws the subjects with replacement and "
          "weights each probe by its subject's count; gallery templates fixed; the same resamples for every "
          "row (paired differences)")


def subject_weights(probe_subjects, resamples: int, seed: int) -> torch.Tensor:
    """[resamples, P] float64 probe weights: how often each probe's subject was drawn in each resample."""
    probe_subjects = torch.as_tensor(probe_subjects).cpu()
    _subjects, inverse = torch.unique(probe_subjects, return_inverse=True)
    n = int(_subjects.numel())
    if n == 0 or resamples < 1:
        raise ValueError("the bootstrap needs at least one probe subject and one resample")
    generator = torch.Generator().manual_seed(int(seed))
    draws = torch.randint(n, (resamples, n), generator=generator)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(resamples, n, dtype=torch.float64))
    return counts[:, inverse]


def weighted_rank_rate(ranks, k: int, weights: torch.Tensor) -> torch.Tensor:
    """Rank-k rate per resample: [B] (weights [B, P], ranks [P])."""
    hits = (torch.as_tensor(ranks).cpu() <= k).double()
    return (weights @ hits) / weights.sum(dim=1)


def _rates(cg: np.ndarray, ci: np.ndarray, far_targets: dict[str, float]) -> dict[str, np.ndarray]:
    """EER and TAR@FAR per resample from cumulative genuine/impostor weights at descending thresholds
    ([b, T], the last column = everything accepted); the interpolation of :mod:`engine.evaluation.metrics`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tar = cg / cg[:, -1:]
        far = ci / ci[:, -1:]
    zeros = np.zeros((len(tar), 1))
    tar, far = np.hstack([zeros, tar]), np.hstack([zeros, far])
    frr = 1.0 - tar
    far_e, frr_e = np.hstack([far, np.ones_like(zeros)]), np.hstack([frr, zeros])
    i = np.argmax(far_e >= frr_e, axis=1)
    rows = np.arange(len(i))
    a, b = far_e[rows, i - 1], far_e[rows, i]
    c, d = frr_e[rows, i - 1], frr_e[rows, i]
    denom = (b - a) - (d - c)
    s = np.where(denom == 0, 0.0, (c - a) / np.where(denom == 0, 1.0, denom))
    out = {"eer": a + s * (b - a)}
    for key, target in far_targets.items():
        out[key] = np.where(far <= target + 1e-12, tar, -np.inf).max(axis=1)
    return out


def weighted_verification(sim, genuine, weights: torch.Tensor, far_targets: dict[str, float],
                          bins: int = VERIFICATION_BINS) -> dict[str, np.ndarray]:
    """EER and TAR@FAR per resample ({"eer": [B], key: [B]}) with each probe's trials weighted.

    Exact while resamples x trials <= :data:`EXACT_WORK`: with all weights 1 this is then
    :func:`engine.evaluation.metrics.equal_error_rate` and :func:`~engine.evaluation.metrics.tar_at_far`
    (same operating points, same interpolation). Beyond, the thresholds are ``bins`` score
    quantiles and the counts are summed per subject (probes of a subject share their weight), so
    the cost no longer grows with resamples x trials; the operating points then move by at most
    one bin's share of the trials.
    """
    sim = torch.as_tensor(sim, dtype=torch.float64).cpu()
    genuine = torch.as_tensor(genuine).cpu().bool()
    probes, gallery = sim.shape
    scores = sim.flatten().numpy()
    is_genuine = genuine.flatten().numpy()
    w_all = weights.numpy()
    if len(scores) * len(w_all) > EXACT_WORK:
        return _binned_verification(scores, is_genuine, gallery, weights, far_targets, bins)
    probe_of_trial = np.repeat(np.arange(probes), gallery)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    group_end = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])   # ties: one point
    gen_sorted = is_genuine[order].astype(np.float64)
    probe_sorted = probe_of_trial[order]
    parts: list[dict[str, np.ndarray]] = []
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(scores)))
    for start in range(0, len(w_all), chunk):
        trial_w = w_all[start:start + chunk][:, probe_sorted]                 # [b, N]
        cg = np.cumsum(trial_w * gen_sorted, axis=1)[:, group_end]
        ci = np.cumsum(trial_w * (1.0 - gen_sorted), axis=1)[:, group_end]
        parts.append(_rates(cg, ci, far_targets))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _binned_verification(scores: np.ndarray, is_genuine: np.ndarray, gallery: int, weights: torch.Tensor,
                         far_targets: dict[str, float], bins: int) -> dict[str, np.ndarray]:
    # probes whose weight columns are equal belong to one subject: sum their trials per subject
    _columns, group = torch.unique(weights.T, dim=0, return_inverse=True)
    group = group.numpy()
    first = np.zeros(group.max() + 1, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group))[::-1]
    counts = weights.numpy()[:, first]                                            # [B, S]
    edges = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, bins)))[::-1]     # descending thresholds
    column = np.searchsorted(-edges, -scores, side="left")      # first threshold each score reaches
    subject = np.repeat(group, gallery)
    hist_g = np.zeros((len(first), len(edges)))
    hist_i = np.zeros((len(first), len(edges)))
    np.add.at(hist_g, (subject[is_genuine], column[is_genuine]), 1.0)
    np.add.at(hist_i, (subject[~is_genuine], column[~is_genuine]), 1.0)
    cg = counts @ np.cumsum(hist_g, axis=1)
    ci = counts @ np.cumsum(hist_i, axis=1)
    return _rates(cg, ci, far_targets)


def percentile_interval(values, level: float = LEVEL) -> list[float] | None:
    """The central ``level`` percentile interval of bootstrap values (None when none is finite)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def row_intervals(sim, ranks, genuine, weights: torch.Tensor, far_targets: dict[str, float],
                  level: float = LEVEL) -> dict[str, list[float] | None]:
    """Bootstrap intervals of rank1, rank5, eer and every TAR@FAR of one row."""
    result: dict[str, list[float] | None] = {
        "rank1": percentile_interval(weighted_rank_rate(ranks, 1, weights).numpy(), level),
        "rank5": percentile_interval(weighted_rank_rate(ranks, 5, weights).numpy(), level),
    }
    if torch.as_tensor(genuine).all():   # one subject: no impostor trial, no verification figure
        result.update({"eer": None, **{key: None for key in far_targets}})
        return result
    for key, values in weighted_verification(sim, genuine, weights, far_targets).items():
        result[key] = percentile_interval(values, level)
    return result


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (binomial, p = 1/2)."""
    a_only, b_only = int(a_only), int(b_only)
    if a_only < 0 or b_only < 0:
        raise ValueError("discordant counts cannot be negative")
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, 2.0 * tail / 2 ** n)   # exact integers, then one division


def paired_difference(hits_a, hits_b, weights: torch.Tensor, level: float = LEVEL) -> dict[str, Any]:
    """Rank-1 of A minus rank-1 of B on the same probes: point, bootstrap interval, McNemar."""
    a = torch.as_tensor(hits_a).cpu().bool()
    b = torch.as_tensor(hits_b).cpu().bool()
    if a.shape != b.shape:
        raise ValueError(f"paired rows need the same probes ({a.numel()} vs {b.numel()})")
    delta = a.double() - b.double()
    boot = (weights @ delta) / weights.sum(dim=1)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = mcnemar_exact(a_only, b_only)
    return {"difference": float(delta.mean()), "interval": percentile_interval(boot.numpy(), level),
            "mcnemar": {"a_only": a_only, "b_only": b_only, "p": p}, "significant": p < ALPHA}
