"""Recognition metrics on small hand-computed cases (ties, thresholds, ROC/EER/TAR)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.evaluation import metrics as m

GALLERY = torch.tensor([10, 20, 30])
PROBE_LABELS = torch.tensor([10, 20, 30, 10])
SIM = torch.tensor([
    [0.9, 0.1, 0.2],   # own subject first -> rank 1
    [0.5, 0.5, 0.1],   # tie with a wrong subject -> rank 2 (pessimistic)
    [0.3, 0.6, 0.2],   # two wrong subjects above -> rank 3
    [0.4, 0.4, 0.4],   # three-way tie -> rank 3
])


def test_ranks_count_ties_against_the_probe():
    assert m.probe_ranks(SIM, PROBE_LABELS, GALLERY).tolist() == [1, 2, 3, 3]


def test_unenrolled_probe_never_hits():
    ranks = m.probe_ranks(torch.tensor([[0.9, 0.8, 0.7]]), torch.tensor([99]), GALLERY)
    assert ranks.tolist() == [4]
    assert m.cmc_curve(ranks, 3).tolist() == [0.0, 0.0, 0.0]


def test_cmc_and_rank_k():
    ranks = m.probe_ranks(SIM, PROBE_LABELS, GALLERY)
    assert m.cmc_curve(ranks, 3).tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert m.rank_k_accuracy(ranks, 1) == 0.25
    assert m.rank_k_accuracy(ranks, 2) == 0.5
    assert m.rank_k_accuracy(ranks, 5) == 1.0


def test_duplicate_gallery_subjects_are_refused():
    with pytest.raises(ValueError, match="unique"):
        m.probe_ranks(SIM, PROBE_LABELS, torch.tensor([10, 10, 30]))


def test_open_set_outcomes_at_a_threshold():
    # best scores 0.9, 0.5, 0.6, 0.4: three accepted, only probe 0 with the right identity
    result = m.open_set(SIM, PROBE_LABELS, GALLERY, threshold=0.45)
    assert (result.accepted_correct, result.false_accept, result.rejected) == (0.25, 0.5, 0.25)


def test_open_set_tie_at_the_top_is_a_false_accept_and_threshold_is_inclusive():
    result = m.open_set(SIM[1:2], PROBE_LABELS[1:2], GALLERY, threshold=0.5)
    assert (result.accepted_correct, result.false_accept, result.rejected) == (0.0, 1.0, 0.0)
    exact = m.open_set(SIM[0:1], PROBE_LABELS[0:1], GALLERY, threshold=0.9)
    assert exact.accepted_correct == 1.0


def test_threshold_above_every_score_rejects_everything():
    result = m.open_set(SIM, PROBE_LABELS, GALLERY, threshold=0.95)
    assert (result.accepted_correct, result.false_accept, result.rejected) == (0.0, 0.0, 1.0)


def test_verification_trials_split_genuine_and_impostor():
    scores, genuine = m.verification_trials(SIM, PROBE_LABELS, GALLERY)
    assert sorted(scores[genuine].tolist()) == pytest.approx([0.2, 0.4, 0.5, 0.9])
    assert len(scores[~genuine]) == 8


def test_auc_counts_ties_as_half():
    scores, genuine = m.verification_trials(SIM, PROBE_LABELS, GALLERY)
    # per genuine score: impostors below + half the equal ones: 8 + 6.5 + 2.5 + 5 = 22 of 32
    assert m.roc_auc(scores, genuine) == pytest.approx(22 / 32)


def test_separable_scores_give_auc_one_and_eer_zero():
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    genuine = np.array([True, True, False, False])
    assert m.roc_auc(scores, genuine) == 1.0
    assert m.equal_error_rate(scores, genuine) == 0.0
    assert m.tar_at_far(scores, genuine, 1e-3) == 1.0


def test_eer_at_a_step_and_across_a_tie():
    step = m.equal_error_rate(np.array([0.8, 0.4, 0.6, 0.2]), np.array([True, True, False, False]))
    assert step == pytest.approx(0.5)   # at t = 0.6: FAR = FRR = 1/2
    # the tie at 0.5 moves FAR 0 -> 1/2 and FRR 1/2 -> 0 at once: they cross half way, at 1/4
    tied = m.equal_error_rate(np.array([0.9, 0.5, 0.5, 0.1]), np.array([True, True, False, False]))
    assert tied == pytest.approx(0.25)


def test_tar_at_far_uses_only_thresholds_within_the_far():
    impostors = np.concatenate([[0.85], np.linspace(0.0, 0.3, 99)])
    scores = np.concatenate([[0.9, 0.8, 0.5, 0.4], impostors])
    genuine = np.arange(len(scores)) < 4
    assert m.tar_at_far(scores, genuine, 1e-2) == 1.0    # one impostor of 100 may pass: t = 0.4
    assert m.tar_at_far(scores, genuine, 1e-3) == 0.25   # none may: t above 0.85


def test_roc_points_start_at_origin_and_end_at_one():
    far, tar, thresholds = m.roc_points(np.array([0.8, 0.4, 0.6, 0.2]), np.array([True, True, False, False]))
    assert (far[0], tar[0], thresholds[0]) == (0.0, 0.0, np.inf)
    assert (far[-1], tar[-1]) == (1.0, 1.0)
    assert far.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]


def test_cosine_matrix_normalises_rows():
    sim = m.cosine_similarity_matrix(torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 2.0], [5.0, 0.0]]))
    assert sim.flatten().tolist() == pytest.approx([0.0, 1.0, 2 ** -0.5, 2 ** -0.5])
