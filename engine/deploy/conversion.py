"""PyTorch -> ONNX: one graph exported with a dynamic batch, its parity with PyTorch, its int8 version."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.deploy.onnx_model import BATCH, open_session
from engine.errors import WorkbenchError

INPUT_NAME = {"probe": "vlr", "gallery": "hr"}
OUTPUT_NAME = "embedding"
MIN_OPSET = 18          # the antialiased resize before the recogniser needs ONNX's Resize of opset 18
INT8_METHOD = ("ONNX Runtime quantize_static: QDQ, per-channel int8 weights, uint8 activations, MinMax calibration "
               "on uint8 faces of the val split; dense convolutions (group 1) and the pixel shuffles and LeakyReLUs "
               "between them in int8, depthwise convolutions, LayerNorm, attention and the linear layers in float")
# Measured on cpu-real (lfw-dev 16x16, benchmarks/bench_export.py): quantising every node costs 52.7 rank-1
# points and EdgeFace's depthwise convolutions alone 3; its linear layers (after LayerNorm) 4 more for no speed.
# DSR is all dense convolutions: int8 there loses nothing measurable and is where the time goes.
INT8_OPS_WITH_ANY_GROUP = ("DepthToSpace", "LeakyRelu")


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, opset: int) -> None:
    """Write ``module`` to ``path`` as one self-contained ONNX file (batch dimension dynamic); the exporter's
    progress lines and warnings are not shown (its errors are)."""
    printed = io.StringIO()
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(printed), \
            _quiet_loggers("torch.onnx", "onnxscript"):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name],
                              output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False, report=False)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the message says which op
            raise WorkbenchError(f"the ONNX export at opset {opset} failed ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:400]}). Try another --opset (18 is tested).") from None


def graph_opset(path: Path) -> int:
    """The default-domain opset the graph at ``path`` really has (the exporter may raise a lower request)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0))


def output_dim(path: Path) -> int:
    import onnx

    shape = onnx.load(str(path), load_external_data=False).graph.output[0].type.tensor_type.shape
    return int(shape.dim[-1].dim_value)


def torch_embeddings(module: torch.nn.Module, faces: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([module(torch.from_numpy(np.ascontiguousarray(faces[i:i + BATCH])))
                          for i in range(0, len(faces), BATCH)]).float().numpy()


def onnx_embeddings(path: Path, faces: np.ndarray) -> np.ndarray:
    session = open_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: np.ascontiguousarray(faces[i:i + BATCH])})[0]
                           for i in range(0, len(faces), BATCH)])


def parity(reference: np.ndarray, onnx: np.ndarray) -> dict[str, float]:
    """Largest absolute difference and smallest cosine between two sets of embeddings of the same faces."""
    cosine = (reference * onnx).sum(axis=1) / np.maximum(
        np.linalg.norm(reference, axis=1) * np.linalg.norm(onnx, axis=1), 1e-12)
    return {"images": int(len(reference)), "max_abs_diff": float(np.abs(reference - onnx).max()),
            "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Raise these loggers (the root one when none is named) to ERROR for the call, then put them back: the
    exporter's and the quantiser's info and warnings (one per 1-D weight, "Axis 1 is out-of-range") are not the
    user's to act on."""
    loggers = [logging.getLogger(name) for name in names] if names else [logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over uint8 faces, in batches."""

    def __init__(self, input_name: str, faces: np.ndarray, batch: int = 16):
        self._batches = iter([{input_name: np.ascontiguousarray(faces[i:i + batch])}
                              for i in range(0, len(faces), batch)])

    def get_next(self):
        return next(self._batches, None)


def int8_nodes(path: Path) -> list[str]:
    """The nodes of the graph at ``path`` that :func:`quantize_int8` puts in int8 (see :data:`INT8_METHOD`)."""
    import onnx

    def dense(node) -> bool:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return node.op_type == "Conv" and group == 1

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if dense(n) or n.op_type in INT8_OPS_WITH_ANY_GROUP]


def quantize_int8(source: Path, target: Path, input_name: str, calibration: np.ndarray) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) of :func:`int8_nodes`,
    calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(input_name, calibration)
    work = Path(tempfile.mkdtemp(prefix=".int8-", dir=target.parent))
    try:
        prepared = work / "prepared.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
            warnings.simplefilter("ignore")
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_quantize=int8_nodes(prepared))
    finally:
        shutil.rmtree(work, ignore_errors=True)
