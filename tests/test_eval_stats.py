"""Bootstrap intervals over subjects, paired differences and the exact McNemar test (hand-computed cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.evaluation import metrics, stats, wording

FAR = {"tar_at_far_1e-2": 1e-2, "tar_at_far_1e-1": 1e-1}


def _binomial_p(b: int, c: int) -> float:
    """Two-sided exact McNemar by summing binomial probabilities as floats (an independent route)."""
    n, m = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, k) * 0.5 ** n for k in range(m + 1)))


def test_mcnemar_exact_known_values():
    assert stats.mcnemar_exact(1, 9) == 0.021484375          # 2 * (1 + 10) / 1024
    assert stats.mcnemar_exact(9, 1) == 0.021484375          # two-sided: symmetric
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 6) == 2 / 64               # 0.03125
    for b, c in [(3, 11), (12, 30), (40, 41), (0, 1)]:
        assert stats.mcnemar_exact(b, c) == pytest.approx(_binomial_p(b, c), rel=1e-12)
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def test_subject_weights_resample_whole_subjects_and_follow_the_seed():
    subjects = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    w = stats.subject_weights(subjects, 500, seed=3)
    assert w.shape == (500, 8)
    # a probe's weight = how often its subject was drawn: equal within a subject, 4 draws per resample
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 3], w[:, 4]) and torch.equal(w[:, 6], w[:, 7])
    assert torch.equal(w[:, [0, 3, 5, 6]].sum(dim=1), torch.full((500,), 4.0, dtype=torch.float64))
    assert torch.equal(w, stats.subject_weights(subjects, 500, seed=3))
    assert not torch.equal(w, stats.subject_weights(subjects, 500, seed=4))


def _synthetic_sim(subjects: int, per_subject: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy cosines whose own-subject score is raised: a middling recogniser, ties included."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(subjects).repeat_interleave(per_subject)
    gallery = torch.arange(subjects)
    sim = torch.rand(len(labels), subjects, generator=g)
    sim[torch.arange(len(labels)), labels] += 0.35 * torch.rand(len(labels), generator=g)
    return (sim * 20).round() / 20, labels, gallery      # coarse: many tied scores


def test_unit_weights_reproduce_the_point_estimates_exactly():
    sim, labels, gallery = _synthetic_sim(12, 5, seed=0)
    genuine = labels[:, None] == gallery[None, :]
    scores, flags = metrics.verification_trials(sim, labels, gallery)
    ones = torch.ones(1, len(labels), dtype=torch.float64)
    got = stats.weighted_verification(sim, genuine, ones, FAR)
    assert got["eer"][0] == pytest.approx(metrics.equal_error_rate(scores, flags), abs=1e-12)
    for key, far in FAR.items():
        assert got[key][0] == pytest.approx(metrics.tar_at_far(scores, flags, far), abs=1e-12)
    ranks = metrics.probe_ranks(sim, labels, gallery)
    assert float(stats.weighted_rank_rate(ranks, 1, ones)[0]) == metrics.rank_k_accuracy(ranks, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_contain_the_point_estimate_and_shrink_as_probes_grow(seed):
    widths = []
    for subjects in (8, 40, 200):
        sim, labels, gallery = _synthetic_sim(subjects, 4, seed)
        genuine = labels[:, None] == gallery[None, :]
        ranks = metrics.probe_ranks(sim, labels, gallery)
        weights = stats.subject_weights(labels, 1000, seed)
        intervals = stats.row_intervals(sim, ranks, genuine, weights, FAR)
        scores, flags = metrics.verification_trials(sim, labels, gallery)
        points = {"rank1": metrics.rank_k_accuracy(ranks, 1), "rank5": metrics.rank_k_accuracy(ranks, 5),
                  "eer": metrics.equal_error_rate(scores, flags),
                  "tar_at_far_1e-1": metrics.tar_at_far(scores, flags, 1e-1)}
        for key, point in points.items():
            lo, hi = intervals[key]
            assert lo <= point <= hi, (subjects, key, lo, point, hi)
        widths.append(intervals["rank1"][1] - intervals["rank1"][0])
    assert widths[0] > widths[1] > widths[2] > 0, widths
    assert widths[2] < 0.5 * widths[0]      # ~1/sqrt(n): 25x the subjects, about a fifth of the width


def test_paired_difference_counts_discordant_probes_and_brackets_the_difference():
    labels = torch.arange(20).repeat_interleave(5)          # 100 probes, 20 subjects
    a = torch.zeros(100, dtype=torch.bool)
    b = torch.zeros(100, dtype=torch.bool)
    a[:60] = True                                           # A right on 60
    b[:50] = True
    b[95:] = True                                           # B right on 55; 10 A-only, 5 B-only
    weights = stats.subject_weights(labels, 1000, seed=0)
    result = stats.paired_difference(a, b, weights)
    assert result["difference"] == pytest.approx(0.05)
    assert result["mcnemar"] == {"a_only": 10, "b_only": 5, "p": stats.mcnemar_exact(10, 5)}
    lo, hi = result["interval"]
    assert lo <= 0.05 <= hi and lo < 0 < hi                 # 15 discordant probes in 4 subjects: unsure
    assert result["significant"] is False
    text = wording.comparison_text(result)
    assert text.startswith("+5.0 points [") and "not significant (McNemar p=0.3)" in text


def test_comparison_wording_when_significant():
    body = {"difference": 0.046, "interval": [0.012, 0.08], "mcnemar": {"a_only": 9, "b_only": 1, "p": 0.0215},
            "significant": True}
    assert wording.comparison_text(body) == "+4.6 points [+1.2, +8.0], significant (McNemar p=0.021)"
    assert wording.rate_with_interval(0.426, [0.31, 0.551]) == "42.6% [31.0, 55.1]"
    assert wording.rate_with_interval(None, [0.1, 0.2]) == "-"


def test_a_thousand_resamples_of_hundreds_of_probes_bracket_the_point_estimates():
    """300 probes x 60 subjects, 1000 subject resamples (their time: benchmarks/bench_eval_stats.py)."""
    sim, labels, gallery = _synthetic_sim(60, 5, seed=0)
    genuine = labels[:, None] == gallery[None, :]
    ranks = metrics.probe_ranks(sim, labels, gallery)
    weights = stats.subject_weights(labels, 1000, seed=0)
    intervals = stats.row_intervals(sim, ranks, genuine, weights, FAR)
    rank1 = float((ranks == 1).float().mean())
    assert intervals["rank1"][0] < rank1 < intervals["rank1"][1]
    assert intervals["rank1"][0] <= intervals["rank5"][0] and intervals["rank1"][1] <= intervals["rank5"][1]
    difference = stats.paired_difference(ranks == 1, ranks <= 2, weights)   # rank-1 never beats rank-2
    assert difference["difference"] < 0 and difference["interval"][1] < 0 and difference["mcnemar"]["a_only"] == 0


def test_large_test_sets_use_quantile_thresholds_close_to_the_exact_bootstrap(monkeypatch):
    sim, labels, gallery = _synthetic_sim(40, 5, seed=1)
    sim = sim + 1e-3 * torch.rand(sim.shape, generator=torch.Generator().manual_seed(0))   # mostly distinct
    genuine = labels[:, None] == gallery[None, :]
    weights = stats.subject_weights(labels, 200, seed=0)
    exact = stats.weighted_verification(sim, genuine, weights, FAR)
    monkeypatch.setattr(stats, "EXACT_WORK", 0)
    binned = stats.weighted_verification(sim, genuine, weights, FAR, bins=2048)
    assert np.abs(binned["eer"] - exact["eer"]).max() < 0.005
    assert np.abs(binned["tar_at_far_1e-1"] - exact["tar_at_far_1e-1"]).max() < 0.02
    coarse = stats.weighted_verification(sim, genuine, weights, FAR, bins=16)
    assert np.abs(coarse["eer"] - exact["eer"]).max() > np.abs(binned["eer"] - exact["eer"]).max()
