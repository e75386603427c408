"""The gallery/probe protocol: deterministic enrolment, no probe in the gallery, mean embeddings."""

from __future__ import annotations

import pytest
import torch

from engine.evaluation.protocol import GallerySplit, enrol, split_gallery_probes

# three subjects: a (3 images, listed out of order), b (2 images), c (1 image)
NAMES = ["a_03.png", "b_01.png", "a_01.png", "c_01.png", "a_02.png", "b_02.png"]
LABELS = torch.tensor([0, 1, 0, 2, 0, 1])


def test_first_sorted_images_enrol_and_the_rest_probe():
    split = split_gallery_probes(NAMES, LABELS, per_subject=1)
    assert sorted(NAMES[i] for i in split.gallery_index) == ["a_01.png", "b_01.png", "c_01.png"]
    assert sorted(NAMES[i] for i in split.probe_index) == ["a_02.png", "a_03.png", "b_02.png"]


def test_several_gallery_images_keep_one_probe_per_subject():
    split = split_gallery_probes(NAMES, LABELS, per_subject=2)
    assert sorted(NAMES[i] for i in split.gallery_index) == ["a_01.png", "a_02.png", "b_01.png", "c_01.png"]
    assert sorted(NAMES[i] for i in split.probe_index) == ["a_03.png", "b_02.png"]


@pytest.mark.parametrize("per_subject", [1, 2, 5])
def test_no_probe_is_ever_in_the_gallery(per_subject):
    split = split_gallery_probes(NAMES, LABELS, per_subject=per_subject)
    assert not set(split.gallery_index.tolist()) & set(split.probe_index.tolist())
    assert len(split.gallery_index) + len(split.probe_index) == len(NAMES)


def test_overlap_is_detected():
    with pytest.raises(AssertionError, match=r"\[2\]"):
        GallerySplit(torch.tensor([0, 2]), torch.tensor([1, 2])).check_disjoint()


def test_enrol_averages_normalised_embeddings_per_subject():
    embeddings = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    subjects, means = enrol(embeddings, torch.tensor([7, 7, 3]))
    assert subjects.tolist() == [3, 7]
    assert means[0].tolist() == pytest.approx([0.0, 1.0])
    assert means[1].tolist() == pytest.approx([2 ** -0.5, 2 ** -0.5])
