"""Gallery distractors: extra identities enrolled in the gallery with no probe (``evaluate --distractors N``).

They come from the dataset's ``distractors_processed`` split, which ``prepare --unlabelled DIR
--distractors N`` holds out of the unlabelled faces before anything trains: people never seen by DSR
training, fine-tuning or validation, and not among the test identities. Each file is one identity.
The N enrolled are the first N of the split's sorted names shuffled with ``runtime.seed``, so a
larger N enrols a superset (rank-1 can only stay or drop as N grows), and every row, baseline and
fold of one evaluation enrols the same ones (folds link the same split).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.data.layout import DISTRACTORS, HR_DIR, IMAGE_SUFFIX, split_dir
from engine.errors import DataError

PREPARE_HINT = ("`vlr-workbench prepare SRC DST --unlabelled DIR --distractors N` holds N faces of an unlabelled "
                "folder (people not in SRC) out of all training as distractors")


@dataclass(frozen=True)
class Distractors:
    """The distractor identities one evaluation enrols: HR images (uint8) and their names."""

    names: list[str]
    hr: torch.Tensor   # uint8 [N, 3, H, H]

    def __len__(self) -> int:
        return len(self.names)


def requested(preset, option: int | None) -> tuple[int, str]:
    """(count, where it came from): the ``--distractors`` option when given, else ``eval.distractors``."""
    if option is not None:
        return int(option), f"--distractors {option}"
    return int(preset.eval.distractors), f"eval.distractors = {preset.eval.distractors} (preset {preset.name})"


def available(root: Path | str | None) -> int:
    """How many distractor images the dataset at ``root`` holds (0 without the split, or for the demo faces)."""
    if not root:
        return 0
    folder = split_dir(Path(root).expanduser(), DISTRACTORS) / HR_DIR
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.suffix == IMAGE_SUFFIX and not p.name.startswith("."))


def check(root: Path | str | None, count: int, origin: str) -> None:
    """DataError (one message naming the option and the fix) when ``count`` exceeds what ``root`` holds."""
    if count < 0:
        raise DataError(f"{origin}: give a number of distractor identities >= 0 (0 = none).")
    have = available(root) if count else 0
    if count <= have:
        return
    where = f"the dataset {root}" if root else "the built-in demo faces (data.root is empty)"
    if have == 0:
        raise DataError(f"{origin} asks for {count} gallery distractors, but {where} holds none "
                        f"({DISTRACTORS}_processed is missing). {PREPARE_HINT}; or leave --distractors out "
                        "(eval.distractors = 0).")
    raise DataError(f"{origin} asks for {count} gallery distractors, but {where} holds {have}. Give at most "
                    f"--distractors {have}, or prepare the dataset again with a larger --distractors.")


def load(root: Path | str, count: int, seed: int, vlr_size: tuple[int, int], hr_size: int) -> Distractors:
    """The ``count`` distractors of ``root`` (see the module doc); ``check`` them first."""
    from engine.data.pairs import load_split

    if count <= 0:
        return Distractors([], torch.zeros((0, 3, hr_size, hr_size), dtype=torch.uint8))
    split = load_split(root, DISTRACTORS, vlr_size, hr_size)
    order = list(range(len(split)))            # load_split's names are sorted
    random.Random(seed).shuffle(order)
    chosen = sorted(order[:count])
    return Distractors([split.names[i] for i in chosen], split.hr[torch.tensor(chosen, dtype=torch.long)])


def extend_gallery(hr: torch.Tensor, labels: torch.Tensor, distractors: Distractors, first: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The test gallery's HR images and labels, plus one new label per distractor: ``first``, ``first + 1``, ...
    (``first`` = the number of test subjects, so no distractor shares a test identity's label)."""
    if not len(distractors):
        return hr, labels
    extra = torch.arange(first, first + len(distractors), dtype=labels.dtype)
    return torch.cat([hr, distractors.hr.to(hr.device)]), torch.cat([labels, extra.to(labels.device)])

