"""`prepare`: turn a folder of face photos into the layout (HR 128x128 + antialiased VLR), split by subject.

Subjects come from the folder structure:

* a sub-folder per subject (``SRC/s1/1.pgm``, AT&T/ORL style; images may sit deeper inside it);
* or, for files directly in ``SRC``, the file name up to the first ``_`` or ``.``
  (``subject01.glasses`` -> ``subject01``, Yale style; ``001_01_crop.png`` -> ``001``).

Any file Pillow can read counts, with or without an extension (greyscale, palette and 16-bit
images become RGB); other files (a README, say), and photos whose shorter side is under the VLR size
(a 1x1 photo would become a flat face), are skipped and listed in the manifest. HR is a
centre square crop (side = the shorter edge; fine for portrait photos and Yale's heads on a plain
background, and a no-op for face crops that are already square) resized with Pillow's LANCZOS
filter; VLR is made from HR by :data:`engine.data.photos.VLR_METHOD`. Splits follow
:data:`engine.data.splitting.SPLIT_RULE` with ``split = (train, val, test)``: ``test`` is the
fraction of subjects held out whole, ``val`` the fraction of each remaining subject's images.
"""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from engine.io import atomic
from engine.data.layout import DISTRACTORS, MANIFEST, SPLITS, UNLABELLED, split_dir
from engine.data.photos import (VLR_METHOD, broken_link as _broken_link, collect_images, is_image as _is_image,
                                 load_rgb, open_photo, safe_token as _safe, to_hr)
from engine.data.splitting import SPLIT_RULE, split_by_subject
from engine.data.writer import check_destination, make_split_dirs, staged_dir, write_pair
from engine.errors import DataError

ProgressFn = Callable[[int, int], None]

HR_METHOD = ("centre square crop (side = the shorter edge), then Pillow resize to HR with the LANCZOS filter; "
             "greyscale/palette/16-bit images converted to RGB; EXIF orientation applied")


def parse_split(text: str) -> tuple[float, float, float]:
    """``"80/10/10"`` (percent) or ``"0.8/0.1/0.1"`` -> fractions (train, val, test); ValueError otherwise."""
    parts = text.replace(",", "/").split("/")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"expected TRAIN/VAL/TEST such as 80/10/10, got {text!r}")
    total = sum(values)
    if abs(total - 100) > 0.5 and abs(total - 1) > 0.005:
        raise ValueError(f"TRAIN/VAL/TEST must add up to 100 (or 1), got {text!r} (sum {total:g})")
    return tuple(v / total for v in values)  # type: ignore[return-value]


UNLABELLED_RULE = ("unlabelled: every image of --unlabelled DIR (flat or nested; no identity labels) except the "
                   "distractors; DSR training pairs only, never fine-tuning, validation or evaluation")
DISTRACTOR_RULE = ("distractors: --distractors N images of --unlabelled DIR, drawn with --seed before anything "
                   "trains; one identity each, never trained on; `evaluate --distractors M` (M <= N) enrols M "
                   "of them in the gallery with no probe")


def _large_enough(src: Path, subjects: dict[str, list[tuple[Path, str]]], vlr_size: tuple[int, int],
                  skipped: list[str]) -> tuple[dict[str, list[tuple[Path, str]]], list[tuple[int, int]]]:
    """``subjects`` without the photos whose short side is under the VLR size (a 1x1 photo would become a
    flat face), and the sizes of those; they are added to ``skipped`` (the manifest lists them) with their
    size. Headers only."""
    kept: dict[str, list[tuple[Path, str]]] = {}
    small: list[tuple[int, int]] = []
    for subject, items in subjects.items():
        for path, rest in items:
            with open_photo(path) as image:
                width, height = image.size
            if min(width, height) < max(vlr_size):
                small.append((width, height))
                skipped.append(f"{path.relative_to(src)} ({width}x{height}: smaller than the VLR size "
                               f"{vlr_size[0]}x{vlr_size[1]})")
            else:
                kept.setdefault(subject, []).append((path, rest))
    return kept, small


def _too_few_error(src: Path, subjects: dict[str, list[tuple[Path, str]]], small: list[tuple[int, int]],
                   vlr_size: tuple[int, int]) -> DataError:
    """Why ``src`` cannot be split: too few subjects or images, and how many photos were too small for the VLR."""
    usable = sum(map(len, subjects.values()))
    need = ("a split needs at least two subjects with two or more images each (one for training, one unseen for "
            "testing)")
    if not small:
        return DataError(f"{src} holds {len(subjects)} subject(s) with {usable} readable image(s): {need}. Check the "
                         f"folder structure (one sub-folder per subject, or a SUBJECT_ / SUBJECT. file-name prefix).")
    by_side = sorted(small, key=lambda size: (min(size), size[0] * size[1]))
    (w0, h0), (w1, h1) = by_side[0], by_side[-1]
    sizes = f"{w0}x{h0}" if (w0, h0) == (w1, h1) else f"from {w0}x{h0} to {w1}x{h1}"
    return DataError(f"{src}: {usable + len(small)} photo(s) found, {len(small)} of them skipped as smaller than the "
                     f"VLR size {vlr_size[0]}x{vlr_size[1]} (sizes {sizes}; a photo's shorter side must be at least "
                     f"{max(vlr_size)} pixels), leaving {len(subjects)} subject(s) with {usable} image(s): {need}. "
                     f"Give a smaller --vlr (at most {min(w1, h1)}x{min(w1, h1)} for these photos) or larger photos; "
                     "nothing was written.")


def prepare_dataset(src: Path | str, dst: Path | str, *, vlr_size: tuple[int, int],
                    split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0, hr_size: int = 128,
                    progress: ProgressFn | None = None, degrade=None, force: bool = False,
                    unlabelled: Path | str | None = None, distractors: int = 0) -> dict:
    """Write the layout for the photos in ``src`` to the new folder ``dst``; returns the manifest.

    ``degrade`` (an :class:`engine.data.camera.Camera` or its text spec) makes camera-like VLR images,
    seeded per image by ``seed`` and its name; the spec and each image's drawn values go to the manifest.
    ``unlabelled``: a folder of faces without labels (people not in ``src``) for DSR training only
    (:data:`UNLABELLED_RULE`); ``distractors`` of them are held out as gallery distractors
    (:data:`DISTRACTOR_RULE`). Every check runs before anything is written.
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_dir():
        raise DataError(f"Source folder {src} does not exist or is not a folder. Give a folder of face photos: "
                        f"one sub-folder per subject, or files named SUBJECT_rest.ext / SUBJECT.rest.")
    check_destination(dst, force)
    vlr_size = (int(vlr_size[0]), int(vlr_size[1]))
    _train, val_fraction, test_fraction = split
    subjects, skipped = collect_images(src)
    subjects, small = _large_enough(src, subjects, vlr_size, skipped)
    plan = split_by_subject(subjects, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    if not plan["train"] or (test_fraction > 0 and not plan["test"]):
        raise _too_few_error(src, subjects, small, vlr_size)
    extra = plan_unlabelled(src, subjects, unlabelled, distractors, seed)
    jobs = _named_jobs(plan) + [(name_split, name, path) for name_split, members in extra.splits.items()
                                for name, path in members]
    degrade = _parse_degrade(degrade)
    with staged_dir(dst, replace=force) as tmp:
        drawn = _write_pairs(tmp, jobs, hr_size, vlr_size, degrade, seed, progress)
        manifest = {
            "source": str(src.resolve()), "seed": seed,
            "split": {"train": split[0], "val": val_fraction, "test": test_fraction}, "split_rule": SPLIT_RULE,
            "hr_size": [hr_size, hr_size], "vlr_size": list(vlr_size),
            "hr_method": HR_METHOD, "vlr_method": VLR_METHOD,
            "splits": {**{s: {"images": len(plan[s]), "subjects": len({sub for sub, _ in plan[s]})} for s in SPLITS},
                       **extra.counts()},
            "skipped": skipped,
            **extra.manifest(),
            **({} if degrade is None else {"degrade": _degrade_manifest(degrade, drawn)}),
        }
        atomic.write_json(tmp / MANIFEST, manifest)
    return manifest


@dataclass
class UnlabelledPlan:
    """The unlabelled faces of ``prepare --unlabelled DIR``: {split: [(layout name, path)]}, and the folder."""

    source: Path | None = None
    splits: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict]:
        """The manifest's ``splits`` entries (one identity per distractor image; unlabelled have none)."""
        out: dict[str, dict] = {}
        if self.source is not None:
            out[UNLABELLED] = {"images": len(self.splits.get(UNLABELLED, []))}
            out[DISTRACTORS] = {"images": len(self.splits.get(DISTRACTORS, [])),
                                "subjects": len(self.splits.get(DISTRACTORS, []))}
        return out

    def manifest(self) -> dict[str, dict]:
        if self.source is None:
            return {}
        return {UNLABELLED: {"source": str(self.source.resolve()), "images": len(self.splits.get(UNLABELLED, [])),
                             "rule": UNLABELLED_RULE, "skipped": self.skipped},
                DISTRACTORS: {"source": str(self.source.resolve()), "images": len(self.splits.get(DISTRACTORS, [])),
                              "rule": DISTRACTOR_RULE}}


def plan_unlabelled(src: Path, subjects: dict[str, list[tuple[Path, str]]], folder: Path | str | None,
                    distractors: int, seed: int) -> UnlabelledPlan:
    """Check ``--unlabelled`` / ``--distractors`` and deal the folder's images (DataError before any write)."""
    if distractors < 0:
        raise DataError(f"--distractors {distractors}: give a number of images >= 0 to hold out of --unlabelled "
                        "as gallery distractors.")
    if folder is None:
        if distractors:
            raise DataError(f"--distractors {distractors} holds gallery distractors out of the unlabelled faces, "
                            "but no --unlabelled DIR was given. Add --unlabelled DIR (a folder of faces of people "
                            "not in SRC, e.g. lfw-dev/singles), or leave --distractors out.")
        return UnlabelledPlan()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"--unlabelled {folder} {state}. Give a folder of face images without labels (flat or "
                        "nested), or leave --unlabelled out.")
    inner, outer = sorted((src.resolve(), folder.resolve()), key=lambda p: len(p.parts), reverse=True)
    if inner == outer or outer in inner.parents:
        raise DataError(f"--unlabelled {folder} and SRC {src} overlap (one is inside the other): its faces would "
                        "reach fine-tuning and evaluation. Give a folder of other people's faces, outside SRC.")
    images, skipped = collect_unlabelled(folder)
    if not images:
        raise DataError(f"--unlabelled {folder} holds no images Pillow can read ({len(skipped)} other file(s) "
                        "skipped). Give a folder of face images (flat or nested, any format Pillow reads), or "
                        "leave --unlabelled out.")
    if distractors > len(images):
        raise DataError(f"--distractors {distractors} is more than the {len(images)} image(s) of --unlabelled "
                        f"{folder}. Give at most --distractors {len(images)}, or a larger unlabelled folder.")
    _refuse_shared_files(src, subjects, folder, images)
    order = list(images)
    random.Random(f"{seed}:distractors").shuffle(order)
    return UnlabelledPlan(folder, {DISTRACTORS: sorted(order[:distractors]), UNLABELLED: sorted(order[distractors:])},
                          skipped)


def collect_unlabelled(folder: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """``([(layout name, path)], skipped)``: every image under ``folder`` at any depth, one identity per file
    (its relative path, without ``_``, is its name: ``singles/A_B_0001.jpg`` -> ``A-B-0001.png``)."""
    found, skipped, used = [], [], set()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not (path.is_file() or _broken_link(path)):
            continue
        if _broken_link(path) or not _is_image(path):
            skipped.append(str(relative) + (" (broken symbolic link)" if _broken_link(path) else ""))
            continue
        stem = _safe("-".join(relative.with_suffix("").parts))
        name, n = f"{stem}.png", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        found.append((name, path))
    return found, skipped


def _refuse_shared_files(src: Path, subjects: dict[str, list[tuple[Path, str]]], folder: Path,
                         images: list[tuple[str, Path]]) -> None:
    """DataError when a file of the unlabelled folder has the same bytes as a photo of SRC."""
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    labelled = {digest(path): path for members in subjects.values() for path, _rest in members}
    for _name, path in images:
        twin = labelled.get(digest(path))
        if twin is not None:
            raise DataError(f"{path} (in --unlabelled {folder}) is the same file as {twin} (in SRC {src}): a face "
                            "in both would let DSR train on a fine-tuning or test image. Remove it from one of "
                            "the two folders, then run `vlr-workbench prepare` again.")


def _named_jobs(plan: dict) -> list[tuple[str, str, Path]]:
    """(split, layout file name, source path) of every labelled image (names made unique per split)."""
    jobs = []
    for name_split in SPLITS:
        used: set[str] = set()
        for subject, (path, rest) in plan[name_split]:
            name = f"{subject}_{rest}.png"
            n = 1
            while name in used:
                n += 1
                name = f"{subject}_{rest}-{n}.png"
            used.add(name)
            jobs.append((name_split, name, path))
    return jobs


def _parse_degrade(degrade):
    if not isinstance(degrade, str):
        return degrade
    from engine.data.camera import parse_spec

    try:
        return parse_spec(degrade)
    except ValueError as exc:
        raise DataError(f"--degrade {degrade}: {exc}.") from None


def _write_pairs(tmp: Path, jobs: list, hr_size: int, vlr_size: tuple[int, int], degrade, seed: int,
                 progress: ProgressFn | None) -> dict[str, dict]:
    """Every (split, name, path) job as an HR/VLR pair under ``tmp``; returns the degradation values drawn."""
    drawn: dict[str, dict] = {}   # degraded VLR: image -> the values drawn for it
    make_split_dirs(tmp, sorted({job[0] for job in jobs}))

    def convert(job) -> None:
        name_split, name, path = job
        try:
            image = load_rgb(path)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: cannot read this image ({exc}). Delete or replace it, then run "
                            f"`vlr-workbench prepare` again.") from exc
        if degrade is None:
            write_pair(tmp, name_split, name, to_hr(image, hr_size), vlr_size)
        else:
            drawn[f"{name_split}/{name}"] = write_camera_pair(tmp, name_split, name, to_hr(image, hr_size),
                                                              vlr_size, degrade, seed)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for done, _ in enumerate(pool.map(convert, jobs), start=1):
            if progress is not None:
                progress(done, len(jobs))
    return drawn


def _degrade_manifest(degrade, drawn: dict[str, dict]) -> dict:
    from engine.data.camera import METHOD

    return {"spec": degrade.to_spec(), **degrade.to_json(), "method": METHOD, "images": dict(sorted(drawn.items()))}


def write_camera_pair(root: Path, split: str, name: str, hr, vlr_size: tuple[int, int], camera, seed: int) -> dict:
    """Like :func:`engine.data.writer.write_pair`, the VLR image through ``camera`` (seeded by seed and
    ``split/name``); returns the values drawn for it."""
    import numpy as np
    import torch
    from PIL import Image

    from engine.data.camera import degrade_named
    from engine.data.layout import HR_DIR, VLR_DIR

    folder = split_dir(root, split)
    hr.save(folder / HR_DIR / name, format="PNG", compress_level=1)
    tensor = torch.from_numpy(np.array(hr.convert("RGB"))).permute(2, 0, 1)[None].contiguous()
    vlr, drawn = degrade_named(tensor, vlr_size, camera, seed, [f"{split}/{name}"])
    Image.fromarray(vlr[0].permute(1, 2, 0).numpy()).save(folder / VLR_DIR / name, format="PNG", compress_level=1)
    return drawn[0]
