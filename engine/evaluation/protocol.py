"""The gallery/probe protocol of the test split: which images enrol, which images probe.

Per subject, the first ``per_subject`` images in sorted file-name order are its gallery (HR),
keeping at least one image back as a probe; a subject with a single image enrols it and has no
probe (it stays in the gallery as a distractor). The gallery embeddings of a subject are
averaged into one mean embedding and L2-normalised. Probes are all the other images; no probe
image is ever in the gallery (checked here, not assumed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.evaluation.gallery_rule import gallery_members


@dataclass(frozen=True)
class GallerySplit:
    gallery_index: torch.Tensor   # int64 indices into the split: the enrolled HR images
    probe_index: torch.Tensor     # int64 indices into the split: everything else

    def check_disjoint(self) -> None:
        shared = set(self.gallery_index.tolist()) & set(self.probe_index.tolist())
        if shared:
            raise AssertionError(f"probe images {sorted(shared)} are also in the gallery")


def split_gallery_probes(names: list[str], labels: torch.Tensor, per_subject: int) -> GallerySplit:
    """Deterministic split: the first ``per_subject`` sorted names of each subject enrol (the rule:
    :mod:`engine.evaluation.gallery_rule`)."""
    gallery, probes = gallery_members(names, [int(label) for label in torch.as_tensor(labels).cpu()], per_subject)
    result = GallerySplit(torch.tensor(sorted(gallery), dtype=torch.long),
                          torch.tensor(sorted(probes), dtype=torch.long))
    result.check_disjoint()
    return result


def enrol(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean embedding per subject, L2-normalised: (subject labels sorted [G], embeddings [G, D])."""
    labels = torch.as_tensor(labels, device=embeddings.device)
    normed = torch.nn.functional.normalize(embeddings.float(), dim=1)
    subjects = torch.unique(labels)   # sorted
    means = torch.stack([normed[labels == s].mean(dim=0) for s in subjects])
    return subjects, torch.nn.functional.normalize(means, dim=1)
