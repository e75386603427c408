"""Enrolment and identification with a deployed model (ONNX Runtime and numpy; no torch).

``enroll`` makes a gallery file: one L2-normalised mean embedding per identity (as ``evaluate`` enrols), the
identities' names, the source file of every embedded face, and the model's id. ``identify`` scores probes
against it by cosine similarity and refuses a gallery that another model made.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.data.layout import HR_DIR, SPLITS, has_split, split_dir, subject_of
from engine.data.photos import IMAGE_SUFFIXES, collect_images
from engine.deploy import card as cards
from engine.deploy.faces import hr_face, image_files, vlr_face
from engine.deploy.onnx_model import BATCH, DeployedModel
from engine.errors import DataError, WorkbenchError
from engine.evaluation.gallery_rule import gallery_members, mean_templates
from engine.io import atomic

GALLERY_FORMAT = "vlr-workbench-gallery-1"
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Gallery:
    identities: np.ndarray      # str [G]
    embeddings: np.ndarray      # float32 [G, D], L2-normalised
    source_identity: np.ndarray  # str [F]: whose face each source file is
    source_file: np.ndarray     # str [F]
    model_id: str
    precision: str
    origin: str                 # what was enrolled: the folder and how identities were read

    def save(self, path: Path | str) -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, format=np.array(GALLERY_FORMAT), identities=self.identities, embeddings=self.embeddings,
                 source_identity=self.source_identity, source_file=self.source_file,
                 model_id=np.array(self.model_id), precision=np.array(self.precision), origin=np.array(self.origin))
        return atomic.write_bytes(Path(path).expanduser(), buffer.getvalue())


def load_gallery(path: Path | str) -> Gallery:
    path = Path(path).expanduser()
    fix = "Make one with `vlr-workbench enroll SRC --model DIR --out GALLERY.npz`."
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise WorkbenchError(f"gallery {path} does not exist. {fix}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise WorkbenchError(f"gallery {path} cannot be read ({exc}): it is not a gallery file. {fix}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise WorkbenchError(f"{path} is a single numpy array, not a vlr-workbench gallery (an .npz archive). {fix}")
    with loaded:
        fields = {name: loaded[name] for name in loaded.files}
    try:
        if str(fields["format"]) != GALLERY_FORMAT:
            raise KeyError("format")
        gallery = Gallery(fields["identities"], fields["embeddings"].astype(np.float32), fields["source_identity"],
                          fields["source_file"], str(fields["model_id"]), str(fields["precision"]),
                          str(fields["origin"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise WorkbenchError(f"{path} is not a vlr-workbench gallery (format {GALLERY_FORMAT}; missing or wrong "
                             f"{exc}). {fix}") from None
    if gallery.embeddings.ndim != 2 or len(gallery.embeddings) != len(gallery.identities) or not len(gallery.identities):
        raise WorkbenchError(f"{path}: its embeddings ({gallery.embeddings.shape}) do not match its "
                             f"{len(gallery.identities)} identities. {fix}")
    return gallery


def _prepared_split(src: Path) -> Path | None:
    """The split folder ``src`` names: a dataset root (its test split) or one ``*_processed`` split folder."""
    if has_split(src, "test"):
        return split_dir(src, "test")
    if (src / HR_DIR).is_dir():
        return src
    return None


def enrolment_faces(src: Path | str, per_subject: int) -> tuple[list[tuple[str, Path]], str]:
    """([(identity, photo)], how they were chosen) from ``src``: a prepared split (the gallery images of
    ``evaluate``'s rule, ``per_subject`` per subject), else a folder of photos (every photo; one sub-folder per
    person, or prepare's name prefixes)."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise DataError(f"{src} is not a folder. Give a folder of photos (one sub-folder per person, or file names "
                        "that start with the person's id) or a prepared dataset.")
    split = _prepared_split(src)
    if split is not None:
        names = sorted(p.name for p in (split / HR_DIR).iterdir()
                       if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        gallery, _probes = gallery_members(names, [subject_of(n) for n in names], per_subject)
        chosen = [(subject_of(names[i]), split / HR_DIR / names[i]) for i in gallery]
        origin = (f"{split}: the HR gallery images evaluate enrols (first {per_subject} per subject in file-name "
                  "order, one kept back as a probe)")
    else:
        subjects, _skipped = collect_images(src)
        chosen = [(subject, path) for subject in sorted(subjects) for path, _name in subjects[subject]]
        origin = f"{src}: every photo, identities from sub-folders or name prefixes as prepare reads them"
    if not chosen:
        splits = ", ".join(f"{s}_processed" for s in SPLITS)
        raise DataError(f"{src} holds no face photo to enrol. Give a folder of photos (one sub-folder per person, "
                        f"or file names that start with the person's id) or a prepared dataset ({splits}).")
    return chosen, origin


def enroll(model: DeployedModel, faces: list[tuple[str, Path]], origin: str,
           progress: ProgressFn | None = None) -> Gallery:
    """Embed each HR face with the gallery graph; one L2-normalised mean per identity (sorted names)."""
    embedded = []
    for start in range(0, len(faces), BATCH):
        chunk = faces[start:start + BATCH]
        embedded.append(model.embed(cards.GALLERY, np.stack([hr_face(path, model.hr_size) for _, path in chunk])))
        if progress:
            progress(start + len(chunk), len(faces))
    names = [identity for identity, _ in faces]
    identities, templates = mean_templates(np.concatenate(embedded), names)
    return Gallery(identities, templates, np.array(names), np.array([str(p) for _, p in faces]), model.model_id,
                   model.precision, origin)


def check_gallery(model: DeployedModel, gallery: Gallery, gallery_path: Path | str) -> None:
    if gallery.model_id != model.model_id:
        raise WorkbenchError(f"gallery {gallery_path} was enrolled with model {gallery.model_id}, but {model.folder} "
                             f"is model {model.model_id}: embeddings of two models cannot be compared. Enrol the "
                             f"gallery again with `vlr-workbench enroll SRC --model {model.folder} --out "
                             f"{gallery_path}`.")


def identify(model: DeployedModel, gallery: Gallery, probes: list[str | Path], top: int, threshold: float,
             progress: ProgressFn | None = None) -> list[dict]:
    """One result per probe image: ``{"image", "top": [{"identity", "score"}], "accepted"}``, best first."""
    files = image_files(probes)
    results = []
    for start in range(0, len(files), BATCH):
        chunk = files[start:start + BATCH]
        faces = np.stack([vlr_face(path, model.vlr_size, model.hr_size) for path in chunk])
        scores = model.embed(cards.PROBE, faces) @ gallery.embeddings.T
        for path, row in zip(chunk, scores):
            order = np.argsort(-row, kind="stable")[:top]
            ranked = [{"identity": str(gallery.identities[i]), "score": round(float(row[i]), 6)} for i in order]
            results.append({"image": str(path), "top": ranked, "accepted": bool(ranked[0]["score"] >= threshold)})
        if progress:
            progress(start + len(chunk), len(files))
    return results
