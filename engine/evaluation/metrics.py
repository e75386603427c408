"""Recognition metrics on a probe x gallery cosine-similarity matrix and on verification scores.

Conventions (the README's evaluation protocol):

- The gallery holds one entry per enrolled subject (``gallery_labels`` are unique), probes are
  never gallery images. ``sim[i, j]`` is the cosine of probe ``i`` and gallery subject ``j``.
- **Rank** of a probe: 1 + the number of *wrong* gallery subjects whose score is >= the score of
  the probe's own subject. Ties are pessimistic: a wrong subject scoring exactly as high as the
  right one is ranked ahead of it. A probe whose subject is not enrolled gets rank ``G + 1``
  (never a hit).
- **CMC**: ``cmc[k-1]`` = fraction of probes with rank <= k. Rank-1 = ``cmc[0]``.
- **Open set** at threshold ``t``: a probe is *accepted* when its best gallery score is >= t,
  with the identity of that best entry; otherwise it is *rejected* as unknown.
  ``accepted_correct`` (the ``open_set_accuracy``) = fraction accepted with the right identity,
  which needs rank 1 (so a tie at the top with a wrong subject is a false accept),
  ``false_accept`` = accepted with a wrong identity, ``rejected`` = the rest; they sum to 1.
- **Verification**: every probe x gallery-subject pair is a trial; genuine = same subject,
  impostor = another one. A trial is accepted when its score is >= the threshold.
  ROC AUC counts a genuine/impostor tie as one half (Mann-Whitney). EER is where the false
  accept rate (FAR) equals the false reject rate (FRR), linearly interpolated between the
  ROC's operating points. TAR at FAR f is the best true accept rate over thresholds whose FAR
  is <= f (with fewer than 1/f impostor trials this is the TAR at FAR 0, the conservative value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def cosine_similarity_matrix(probes: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """[P, D] x [G, D] embeddings -> [P, G] cosines (each row L2-normalised first)."""
    probes = torch.nn.functional.normalize(probes.float(), dim=1)
    gallery = torch.nn.functional.normalize(gallery.float(), dim=1)
    return probes @ gallery.T


def _check_gallery(sim: torch.Tensor, probe_labels: torch.Tensor, gallery_labels: torch.Tensor) -> None:
    if sim.ndim != 2 or sim.shape != (len(probe_labels), len(gallery_labels)):
        raise ValueError(f"similarity matrix of shape {tuple(sim.shape)} does not match "
                         f"{len(probe_labels)} probes x {len(gallery_labels)} gallery subjects")
    if len(torch.unique(gallery_labels)) != len(gallery_labels):
        raise ValueError("gallery labels must be unique (one mean embedding per subject)")


def _as_scores(sim) -> torch.Tensor:
    """Scores keep their float dtype, so a threshold compares at the scores' own precision."""
    sim = torch.as_tensor(sim)
    return sim if sim.is_floating_point() else sim.double()


def probe_ranks(sim: torch.Tensor, probe_labels, gallery_labels) -> torch.Tensor:
    """1-based rank of each probe's own subject, ties counted pessimistically (see module doc)."""
    sim = _as_scores(sim)
    probe_labels = torch.as_tensor(probe_labels)
    gallery_labels = torch.as_tensor(gallery_labels)
    _check_gallery(sim, probe_labels, gallery_labels)
    if not bool(torch.isfinite(sim).all()):   # NaN compares false: every probe would rank first
        raise ValueError("the similarity matrix holds NaN or inf: non-finite embeddings cannot be ranked")
    is_own = probe_labels[:, None] == gallery_labels[None, :]
    enrolled = is_own.any(dim=1)
    own_score = torch.where(is_own, sim, torch.full_like(sim, -torch.inf)).max(dim=1).values
    wrong_at_least_as_high = ((sim >= own_score[:, None]) & ~is_own).sum(dim=1)
    ranks = 1 + wrong_at_least_as_high
    return torch.where(enrolled, ranks, torch.full_like(ranks, len(gallery_labels) + 1))


def cmc_curve(ranks: torch.Tensor, max_rank: int) -> torch.Tensor:
    """``cmc[k-1]`` = fraction of probes whose rank is <= k, for k = 1..max_rank."""
    ranks = torch.as_tensor(ranks)
    if len(ranks) == 0:
        raise ValueError("no probes: the CMC of an empty probe set is undefined")
    ks = torch.arange(1, max_rank + 1)
    return (ranks[None, :] <= ks[:, None]).double().mean(dim=1)


def rank_k_accuracy(ranks: torch.Tensor, k: int) -> float:
    """Fraction of probes whose own subject is among the top ``k`` (pessimistic ties)."""
    return float((torch.as_tensor(ranks) <= k).double().mean())


@dataclass(frozen=True)
class OpenSetResult:
    threshold: float
    accepted_correct: float   # = open_set_accuracy
    rejected: float
    false_accept: float


def open_set(sim: torch.Tensor, probe_labels, gallery_labels, threshold: float) -> OpenSetResult:
    """Accept a probe when its best cosine is >= ``threshold``; fractions of the three outcomes."""
    sim = _as_scores(sim)
    ranks = probe_ranks(sim, probe_labels, gallery_labels)
    accepted = sim.max(dim=1).values >= torch.tensor(threshold, dtype=sim.dtype)
    correct = ranks == 1
    n = len(ranks)
    return OpenSetResult(threshold=float(threshold),
                         accepted_correct=int((accepted & correct).sum()) / n,
                         rejected=int((~accepted).sum()) / n,
                         false_accept=int((accepted & ~correct).sum()) / n)


def verification_trials(sim: torch.Tensor, probe_labels, gallery_labels) -> tuple[np.ndarray, np.ndarray]:
    """Every probe x gallery-subject pair: (scores, is_genuine) as flat numpy arrays."""
    sim = torch.as_tensor(sim, dtype=torch.float64)
    probe_labels = torch.as_tensor(probe_labels)
    gallery_labels = torch.as_tensor(gallery_labels)
    _check_gallery(sim, probe_labels, gallery_labels)
    genuine = probe_labels[:, None] == gallery_labels[None, :]
    return sim.flatten().numpy(), genuine.flatten().numpy()


def _split(scores, genuine) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    genuine = np.asarray(genuine, dtype=bool)
    if scores.shape != genuine.shape:
        raise ValueError(f"{scores.shape[0]} scores but {genuine.shape[0]} genuine flags")
    pos, neg = scores[genuine], scores[~genuine]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("verification needs at least one genuine and one impostor trial")
    return pos, neg


def roc_points(scores, genuine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(far, tar, thresholds) for acceptance ``score >= t`` at every distinct score, descending,
    starting at (0, 0) for ``t = +inf``; tied scores form one operating point."""
    pos, neg = _split(scores, genuine)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
    # count of scores >= t = n - (number strictly below t)
    tar = (len(pos) - np.searchsorted(pos_sorted, thresholds, side="left")) / len(pos)
    far = (len(neg) - np.searchsorted(neg_sorted, thresholds, side="left")) / len(neg)
    return (np.concatenate([[0.0], far]), np.concatenate([[0.0], tar]),
            np.concatenate([[np.inf], thresholds]))


def roc_auc(scores, genuine) -> float:
    """P(genuine score > impostor score) + 0.5 P(equal): the area under the ROC."""
    pos, neg = _split(scores, genuine)
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    equal = np.searchsorted(neg_sorted, pos, side="right") - below
    return float((below + 0.5 * equal).sum() / (len(pos) * len(neg)))


def equal_error_rate(scores, genuine) -> float:
    """The rate where FAR = FRR, interpolated linearly between adjacent ROC points."""
    far, tar, _ = roc_points(scores, genuine)
    frr = 1.0 - tar
    far = np.concatenate([far, [1.0]])   # t = -inf accepts everything
    frr = np.concatenate([frr, [0.0]])
    i = int(np.argmax(far >= frr))       # first point where FAR has caught up with FRR (i >= 1)
    a, b, c, d = far[i - 1], far[i], frr[i - 1], frr[i]
    denom = (b - a) - (d - c)
    s = 0.0 if denom == 0 else (c - a) / denom
    return float(a + s * (b - a))


def tar_at_far(scores, genuine, far_target: float) -> float:
    """The best TAR over thresholds whose FAR is <= ``far_target``."""
    far, tar, _ = roc_points(scores, genuine)
    return float(tar[far <= far_target + 1e-12].max())
