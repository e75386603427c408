"""An exported model folder opened with ONNX Runtime: faces (uint8 NHWC RGB) -> L2-normalised embeddings.

No torch: this is what ``enroll`` and ``identify`` run on an edge box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.deploy import card as cards
from engine.errors import WorkbenchError

BATCH = 64


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise WorkbenchError("onnxruntime is not installed; install it with `pip install -c constraints.txt "
                             "onnxruntime` (it is pinned in the project's constraints.txt).") from None
    return onnxruntime


def open_session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session of ``path`` (``threads`` 0: ONNX Runtime's default)."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3   # errors only: its warnings are not the user's to act on
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
        raise WorkbenchError(f"{path}: ONNX Runtime cannot load this graph ({' '.join(str(exc).split())[:300]}). "
                             "Export the model again.") from None


class DeployedModel:
    """A model folder: its card, and its probe and gallery graphs at one precision (opened on first use)."""

    def __init__(self, folder: Path | str, precision: str = "fp32", threads: int = 0):
        self.folder = Path(folder).expanduser()
        self.card: dict[str, Any] = cards.read_card(self.folder)
        self.precision = precision
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        for graph in (cards.PROBE, cards.GALLERY):   # every file checked before any face is read
            cards.checked_graph(self.folder, self.card, graph, precision)

    @property
    def model_id(self) -> str:
        return str(self.card.get("model_id", ""))

    @property
    def vlr_size(self) -> tuple[int, int]:
        width, height = self.card["probe"]["size"]
        return int(width), int(height)

    @property
    def hr_size(self) -> int:
        return int(self.card["gallery"]["size"][0])

    @property
    def threshold(self) -> float:
        return float(self.card.get("threshold", 0.0))

    def session(self, graph: str):
        if graph not in self._sessions:
            self._sessions[graph] = open_session(self.folder / cards.graph_file(self.precision, graph), self.threads)
        return self._sessions[graph]

    def embed(self, graph: str, faces: np.ndarray) -> np.ndarray:
        """float32 [N, D] embeddings of uint8 faces [N, H, W, 3], in batches of :data:`BATCH`."""
        session = self.session(graph)
        name = session.get_inputs()[0].name
        parts = [session.run(None, {name: np.ascontiguousarray(faces[i:i + BATCH])})[0]
                 for i in range(0, len(faces), BATCH)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)
