"""The ``export`` job: a finished run (or a DSR and a recogniser file) -> a model folder for ONNX Runtime.

Steps: the files (engine.deploy.source), the two graphs exported (engine.deploy.conversion), their parity with
PyTorch on the test images (fp32 under cosine :data:`MIN_COSINE` is an error), with ``int8`` the quantised graphs
calibrated on the val split, then the card (engine.deploy.card). Everything is written into a staged folder
renamed to ``out`` at the end: a failed or stopped export leaves nothing half-written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.data.layout import split_dir
from engine.deploy import card as cards
from engine.deploy import conversion, source as sources
from engine.deploy.graphs import PREPROCESSING, GalleryGraph, ProbeGraph
from engine.errors import WorkbenchError
from engine.events import Emit, Finished, Log, Progress
from engine.io import atomic

JOB = "export"
MIN_COSINE = 0.999          # fp32 ONNX Runtime vs PyTorch: below this the export is refused
INT8_WARN_COSINE = 0.99     # int8 vs PyTorch: below this the log warns (the figures go in the card either way)


def run_export(request, emit: Emit, stop) -> Finished:
    from engine.models.dsr import load_dsr
    from engine.models.edgeface import load_recogniser

    options = request.options
    out = _checked_out(options)
    source = _source(options)
    dsr, checkpoint = load_dsr(source.dsr, "cpu")
    recogniser = load_recogniser(source.recogniser, None).float().eval()
    vlr_size, hr_size = tuple(dsr.vlr_size), int(dsr.hr_size)
    graphs = {cards.PROBE: ProbeGraph(dsr.float(), recogniser).eval(),
              cards.GALLERY: GalleryGraph(recogniser, hr_size).eval()}
    data_root = _data_root(request, source, emit)
    test = _faces(data_root, "test", vlr_size, hr_size, options.parity_images)
    steps = 2 + (2 if options.int8 else 0)
    emit(Log(JOB, f"exporting DSR {source.dsr} and recogniser {source.recogniser} to {out} (opset {options.opset})"))

    def taken(path: Path) -> Exception:
        return WorkbenchError(f"{path} was written by another process during this export; nothing was replaced. "
                              "Export again with --force, or to another folder.")

    started = time.monotonic()
    with atomic.staged_folder(out, replace_marker=cards.CARD if options.force else None, taken=taken) as staged:
        parities: dict[str, dict[str, float]] = {}
        for number, graph in enumerate((cards.PROBE, cards.GALLERY), start=1):
            stop.check()
            emit(Progress(JOB, JOB, 0, 0, number, steps))
            path = staged / cards.GRAPH_FILES[graph]
            conversion.export_graph(graphs[graph], torch.from_numpy(test[graph][:2]), path,
                                    conversion.INPUT_NAME[graph], options.opset)
            parities[graph] = _parity(graphs[graph], path, test[graph], graph, emit)
            if not parities[graph]["min_cosine"] >= MIN_COSINE:    # NaN (non-finite outputs) fails too
                raise WorkbenchError(f"the exported {graph} graph differs from PyTorch on the test images of "
                                     f"{data_root}: smallest cosine {parities[graph]['min_cosine']:.5f} < {MIN_COSINE} "
                                     f"(largest difference {parities[graph]['max_abs_diff']:.2e}); nothing was "
                                     "written. Try another --opset, or report the model's layers.")
        if options.int8:
            calibration = _faces(data_root, "val", vlr_size, hr_size, options.calibration_images)
            for number, graph in enumerate((cards.PROBE, cards.GALLERY), start=3):
                stop.check()
                emit(Progress(JOB, JOB, 0, 0, number, steps))
                emit(Log(JOB, f"int8 {graph} graph: static quantisation calibrated on {len(calibration[graph])} "
                              f"val images of {data_root}"))
                path = staged / cards.INT8_FILES[graph]
                conversion.quantize_int8(staged / cards.GRAPH_FILES[graph], path, conversion.INPUT_NAME[graph],
                                         calibration[graph])
                parities[f"{graph}.int8"] = _parity(graphs[graph], path, test[graph], f"{graph} int8", emit)
        stop.check()
        card = _card(staged, source, checkpoint, (vlr_size, hr_size), options, parities, request, data_root)
        if options.int8:
            card["int8_calibration"] = {"split": "val", "images": len(calibration[cards.PROBE]),
                                        "data": str(data_root.resolve()), "method": conversion.INT8_METHOD}
        atomic.write_json(staged / cards.CARD, card)
    seconds = time.monotonic() - started
    emit(Log(JOB, f"model folder {out}: {', '.join(sorted(card['files']))} (model {card['model_id']}, "
                  f"{seconds:.0f} s)"))
    summary = {"out": str(out), "model_id": card["model_id"], "files": sorted(card["files"]),
               "probe_min_cosine": parities[cards.PROBE]["min_cosine"],
               "gallery_min_cosine": parities[cards.GALLERY]["min_cosine"], "seconds": round(seconds, 1)}
    return Finished(job=JOB, run_dir=None, summary=summary)   # a model folder, not a run


def _checked_out(options) -> Path:
    """``--out``: new, empty, or (``force``) an earlier export holding nothing but its card and the files it lists."""
    if not options.out:
        raise WorkbenchError("export needs --out DIR: the model folder to write.")
    out = Path(options.out).expanduser()
    parent = next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise WorkbenchError(f"--out {out}: {parent} is a file, so no folder can be made there. Give another --out.")
    state = atomic.destination_state(out, cards.CARD)
    if state == "free":
        return out
    if state == "taken":
        raise WorkbenchError(f"--out {out} already exists and holds files that are not an exported model; nothing "
                             "was written. Give a new folder (it is created) or an empty one.")
    if not options.force:
        raise WorkbenchError(f"--out {out} already holds an exported model; nothing was written. Pass --force to "
                             "replace it, or give a new folder.")
    try:
        listed = set(json.loads((out / cards.CARD).read_text(encoding="utf-8")).get("files") or {})
    except (OSError, ValueError, AttributeError):
        listed = set()
    extra = sorted(p.name for p in out.iterdir() if p.name != cards.CARD and p.name not in listed)
    if extra:
        raise WorkbenchError(f"--out {out} holds files its model card does not list ({', '.join(extra[:5])}"
                             f"{', ...' if len(extra) > 5 else ''}); --force replaces only an export, so nothing was "
                             "written. Move those files out (a gallery belongs beside the model folder), or give "
                             "a new folder.")
    return out


def _source(options) -> sources.ExportSource:
    if options.run and (options.dsr or options.edgeface):
        raise WorkbenchError("give either RUN_DIR or --dsr CKPT --edgeface CKPT, not both.")
    if options.run:
        return sources.from_run(options.run)
    if not (options.dsr and options.edgeface):
        raise WorkbenchError(f"export needs RUN_DIR, or both --dsr CKPT and --edgeface CKPT. {sources.FIX}")
    return sources.from_files(options.dsr, options.edgeface)


def _data_root(request, source: sources.ExportSource, emit: Emit) -> Path:
    """The test images of the run's evaluation (or --data, or the preset's data)."""
    from engine.data.resolve import job_data_root

    recorded = source.protocol.get("data_root")
    if request.data or not recorded:
        return job_data_root(request.preset, request.data, emit, JOB)
    candidates = [Path(recorded)]
    if not Path(recorded).is_absolute() and source.run is not None:   # relative to where the run was made
        candidates += [source.run.parent.parent / recorded, source.run.parent.parent.parent / recorded]
    root = next((c for c in candidates if split_dir(c, "test").is_dir()), None)
    if root is None:
        raise WorkbenchError(f"the run was evaluated on {recorded}, which is gone (no test split there): parity is "
                             "measured on those test images. Pass --data DIR with the same dataset.")
    emit(Log(JOB, f"data: {root} (the evaluation's)"))
    return root


def _faces(root: Path, split: str, vlr_size, hr_size: int, limit: int) -> dict[str, np.ndarray]:
    """uint8 NHWC faces of a split: VLR for the probe graph, HR for the gallery graph (the first ``limit``)."""
    from engine.data import load_split

    pairs = load_split(root, split, vlr_size, hr_size)
    count = len(pairs.names) if not limit else min(limit, len(pairs.names))
    if count == 0:
        raise WorkbenchError(f"{split_dir(root, split)} holds no image: export measures parity on the test split "
                             "and calibrates int8 on the val split.")
    return {cards.PROBE: pairs.vlr[:count].permute(0, 2, 3, 1).contiguous().numpy(),
            cards.GALLERY: pairs.hr[:count].permute(0, 2, 3, 1).contiguous().numpy()}


def _parity(module, path: Path, faces: np.ndarray, what: str, emit: Emit) -> dict[str, float]:
    measured = conversion.parity(conversion.torch_embeddings(module, faces), conversion.onnx_embeddings(path, faces))
    level = "warning" if "int8" in what and measured["min_cosine"] < INT8_WARN_COSINE else "info"
    emit(Log(JOB, f"{what} graph vs PyTorch on {measured['images']} test images: smallest cosine "
                  f"{measured['min_cosine']:.5f}, largest difference {measured['max_abs_diff']:.2e}", level=level))
    return measured


def _card(folder: Path, source: sources.ExportSource, checkpoint: dict, sizes, options, parities: dict, request,
          data_root: Path) -> dict[str, Any]:
    vlr_size, hr_size = sizes
    hashes = {path.name: cards.file_sha256(path) for path in sorted(folder.glob("*.onnx"))}
    opset = conversion.graph_opset(folder / cards.GRAPH_FILES[cards.PROBE])
    evaluation = source.evaluation or {}
    protocol = source.protocol
    rows = {name: {k: v for k, v in body.items() if isinstance(v, (int, float))}
            for name, body in evaluation.items() if name not in ("protocol", "intervals", "comparisons", "curves")
            and isinstance(body, dict)}
    face = {"dtype": "uint8", "layout": "NHWC", "channels": "RGB", "dynamic_batch": True}
    return {
        "format": cards.FORMAT, "version": cards.VERSION, "model_id": cards.model_id(hashes), "files": hashes,
        "probe": {**face, "input": conversion.INPUT_NAME[cards.PROBE], "size": list(vlr_size),
                  "shape": ["batch", vlr_size[1], vlr_size[0], 3], "file": cards.GRAPH_FILES[cards.PROBE],
                  "made_as": "prepare's VLR face: centre square crop, LANCZOS to HR, antialiased bicubic to VLR"},
        "gallery": {**face, "input": conversion.INPUT_NAME[cards.GALLERY], "size": [hr_size, hr_size],
                    "shape": ["batch", hr_size, hr_size, 3], "file": cards.GRAPH_FILES[cards.GALLERY],
                    "made_as": "prepare's HR face: centre square crop, LANCZOS to HR"},
        "output": {"name": conversion.OUTPUT_NAME, "dim": conversion.output_dim(folder / cards.GRAPH_FILES[cards.PROBE]),
                   "l2_normalised": True, "score": "cosine"},
        "preprocessing": PREPROCESSING,
        "threshold": float(protocol.get("threshold", request.preset.eval.threshold)),
        "opset": opset, "int8": options.int8, "parity": parities, "parity_data": _absolute(data_root),
        "source": {"run": _absolute(source.run), "dsr": _absolute(source.dsr), "recogniser": _absolute(source.recogniser),
                   "preset": request.preset.name, "dsr_config": checkpoint.get("config"),
                   "eval_json": _absolute(source.eval_file)},
        "evaluation": {"rows": rows, "protocol": {k: protocol.get(k) for k in (
            "subjects", "probes", "distractors", "gallery_per_subject", "camera", "data_root", "vlr_size")}}
        if evaluation else None,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _absolute(path: Path | None) -> str | None:
    """A path the card records, absolute (a card read on another machine or from another folder stays clear)."""
    return None if path is None else str(Path(path).resolve())
