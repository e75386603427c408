"""``model.json``: the card of an exported model folder, and the one reader of it (no torch).

The card says what the graphs take and give (sizes, layout, channel order, normalisation), where they came
from (the run, its files, its evaluation), how far ONNX Runtime's outputs are from PyTorch's (parity), and the
SHA-256 of every file: ``model_id`` (the hash of the graphs' hashes) ties a gallery to the model that made it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError

CARD = "model.json"
FORMAT = "vlr-workbench-model"
VERSION = 1
PROBE, GALLERY = "probe", "gallery"
GRAPH_FILES = {PROBE: "probe.onnx", GALLERY: "gallery.onnx"}
INT8_FILES = {PROBE: "probe.int8.onnx", GALLERY: "gallery.int8.onnx"}
FIX = ("Make the folder with `vlr-workbench export RUN_DIR --out DIR` (RUN_DIR: a finished pipeline or evaluate "
       "run) and pass that DIR to --model.")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_id(hashes: dict[str, str]) -> str:
    """The identity of a model folder: the SHA-256 of its fp32 graphs' hashes (first 16 hex digits)."""
    joined = "\n".join(f"{name}={hashes[name]}" for name in sorted(GRAPH_FILES.values()))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def graph_file(precision: str, graph: str) -> str:
    return (INT8_FILES if precision == "int8" else GRAPH_FILES)[graph]


def read_card(folder: Path | str) -> dict[str, Any]:
    """The card of ``folder``, checked: its format, the graph files it names present with the hashes it records.
    Every problem is a WorkbenchError naming the folder or file and how to make a good one."""
    folder = Path(folder).expanduser()
    path = folder / CARD
    if not folder.is_dir():
        raise WorkbenchError(f"model folder {folder} does not exist (or is not a folder). {FIX}")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkbenchError(f"{folder} holds no {CARD}, so it is not an exported model folder. {FIX}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WorkbenchError(f"{path} cannot be read ({exc}). Export the model again. {FIX}") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT or not isinstance(card.get("files"), dict):
        raise WorkbenchError(f"{path} is not a vlr-workbench model card (format {FORMAT!r} with files). {FIX}")
    if card.get("version") != VERSION:
        raise WorkbenchError(f"{path} is a model card of version {card.get('version')!r}; this vlr-workbench reads "
                             f"version {VERSION}. Export the model again with this version.")
    return card


def checked_graph(folder: Path | str, card: dict[str, Any], graph: str, precision: str = "fp32") -> Path:
    """The path of ``graph`` ("probe"/"gallery") at ``precision`` in ``folder``, its hash checked against the card."""
    name = graph_file(precision, graph)
    path = Path(folder).expanduser() / name
    recorded = card["files"].get(name)
    if recorded is None:
        more = " Export with --int8 to make the int8 graphs." if precision == "int8" else ""
        raise WorkbenchError(f"{Path(folder) / CARD} lists no {name}.{more}")
    if not path.is_file():
        raise WorkbenchError(f"{path} is missing from the model folder (its card lists it). Copy the whole folder "
                             "again, or export again.")
    if file_sha256(path) != recorded:
        raise WorkbenchError(f"{path} does not match the SHA-256 its card records: the file was changed or damaged "
                             "after export. Copy the folder again, or export again.")
    return path
