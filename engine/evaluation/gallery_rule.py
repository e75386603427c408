"""Which images of a test split enrol and which probe: the rule alone, on names and subject ids (no torch).

Per subject, the first ``per_subject`` images in sorted file-name order are its gallery, keeping at least
one image back as a probe; a subject with a single image enrols it and has no probe. ``evaluate`` applies
it through :func:`engine.evaluation.protocol.split_gallery_probes`; ``enroll`` of a prepared split applies
it too, so that a deployed gallery holds exactly the images the evaluation enrolled.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def gallery_members(names: Sequence[str], subjects: Sequence, per_subject: int) -> tuple[list[int], list[int]]:
    """(gallery indices, probe indices), each sorted, into ``names`` (``subjects[i]`` is image i's subject)."""
    if per_subject < 1:
        raise ValueError("per_subject must be at least 1")
    by_subject: dict = {}
    for i in sorted(range(len(names)), key=lambda i: names[i]):
        by_subject.setdefault(subjects[i], []).append(i)
    gallery: list[int] = []
    probes: list[int] = []
    for subject in sorted(by_subject):
        members = by_subject[subject]
        keep = max(1, min(per_subject, len(members) - 1))
        gallery += members[:keep]
        probes += members[keep:]
    return sorted(gallery), sorted(probes)


def mean_templates(embeddings: np.ndarray, owners: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(identities sorted, their templates): each face's embedding L2-normalised, one mean per identity,
    L2-normalised again: how ``evaluate`` enrols (:func:`engine.evaluation.protocol.enrol`), in numpy."""
    vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    names = np.asarray(owners)
    identities = np.array(sorted(set(names.tolist())))
    means = np.stack([vectors[names == identity].mean(axis=0) for identity in identities])
    return identities, (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)
