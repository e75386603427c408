"""``export``, ``enroll`` and ``identify``: ship a tuned pipeline as ONNX graphs and use them.

``enroll`` and ``identify`` run on ONNX Runtime alone: nothing on their path imports torch (a test checks).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.errors import WorkbenchError

console = Console(highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    _register_export(sub)
    _register_enroll(sub)
    _register_identify(sub)


def _register_export(sub) -> None:
    p = sub.add_parser("export", help="export a finished pipeline or evaluate run to ONNX (probe and gallery graphs)",
                       description="Writes DIR/probe.onnx (a VLR face, uint8 NHWC RGB at the run's VLR size, any "
                                   "batch -> L2-normalised embedding: DSR and the fine-tuned recogniser in one "
                                   "graph), DIR/gallery.onnx (an HR face -> embedding, through the recogniser that "
                                   "enrolled the evaluation's gallery) and DIR/model.json (sizes, channel order, "
                                   "normalisation, threshold, the run and its evaluation, opset, hashes, and the "
                                   "parity of ONNX Runtime with PyTorch on the run's test images: below cosine "
                                   "0.999 the export is refused). Nothing is half-written: DIR appears whole or "
                                   "not at all.")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a finished pipeline or evaluate run")
    p.add_argument("--out", required=True, metavar="DIR", help="the model folder to write (new or empty)")
    p.add_argument("--dsr", metavar="CKPT", help="instead of RUN_DIR: a DSR checkpoint (with --edgeface)")
    p.add_argument("--edgeface", metavar="CKPT", help="instead of RUN_DIR: the recogniser of both graphs")
    p.add_argument("--preset", help="with --dsr/--edgeface: the preset whose data holds the test images "
                                    "(default: cpu-demo); with RUN_DIR the run's own preset")
    p.add_argument("--data", help="dataset root for the parity and calibration images (default: the "
                                  "evaluation's, else the preset's)")
    p.add_argument("--int8", action="store_true", help="also probe.int8.onnx and gallery.int8.onnx: ONNX Runtime's "
                                                      "static quantisation calibrated on the val split")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 to 23 (default 18; the card records the "
                                                         "graphs' own)")
    p.add_argument("--force", action="store_true", help="replace an exported model folder at --out")
    p.add_argument("--parity-images", type=int, default=512, metavar="N",
                   help="test images for the parity check (default 512, 0 = all)")
    p.add_argument("--calibration-images", type=int, default=128, metavar="N",
                   help="val images for the int8 calibration (default 128, 0 = all)")
    p.set_defaults(func=cmd_export)


def _model_arguments(p: argparse.ArgumentParser, int8_help: str) -> None:
    """--model DIR and --int8, as enroll and identify take them."""
    p.add_argument("--model", required=True, metavar="DIR", help="a folder written by `vlr-workbench export`")
    p.add_argument("--int8", action="store_true", help=int8_help)


def _register_enroll(sub) -> None:
    p = sub.add_parser("enroll", help="enrol a gallery of people with an exported model (ONNX Runtime, no torch)",
                       description="SRC is a folder of photos (one sub-folder per person, or file names that start "
                                   "with the person's id, as prepare reads them; each photo cropped and resized as "
                                   "prepare does) or a prepared dataset or split (then exactly the HR gallery "
                                   "images evaluate enrols). Writes GALLERY.npz: names, one mean embedding per "
                                   "person, the source files and the model's id.")
    p.add_argument("src", metavar="SRC", help="folder of photos, or a prepared dataset / split folder")
    _model_arguments(p, "embed with gallery.int8.onnx")
    p.add_argument("--out", required=True, metavar="GALLERY.npz", help="the gallery file to write")
    p.add_argument("--per-subject", type=int, metavar="K",
                   help="a prepared split: gallery images per subject (default: the evaluation's)")
    p.set_defaults(func=cmd_enroll)


def _register_identify(sub) -> None:
    p = sub.add_parser("identify", help="identify faces against an enrolled gallery (ONNX Runtime, no torch)",
                       description="Each image (or every image in a folder) is a probe: at the model's VLR size it "
                                   "is used as it is, larger it is cropped and resized as prepare does. Prints the "
                                   "top K people with cosine scores, and 'unknown' when the best is below the "
                                   "threshold (default: the model's).")
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR")
    _model_arguments(p, "run probe.int8.onnx")
    p.add_argument("--gallery", required=True, metavar="GALLERY.npz", help="a gallery written by `enroll`")
    p.add_argument("--top", type=int, default=5, metavar="K", help="people listed per probe (default 5)")
    p.add_argument("--threshold", type=float, metavar="T", help="accept the best match at or above this cosine "
                                                                "(default: the model card's)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {image, top, accepted}")
    p.set_defaults(func=cmd_identify)


def cmd_export(args) -> int:
    from engine import presets as P
    from engine.jobs.options import ExportOptions
    from engine.jobs.registry import JobRequest
    from workbench.cli.job_runner import run_in_foreground

    from engine.deploy.source import run_preset_file

    if args.run and args.preset:
        raise WorkbenchError("--preset is for --dsr/--edgeface: a run is exported with its own preset.")
    preset = P.load(run_preset_file(args.run) if args.run else (args.preset or "cpu-demo"))
    for flag, value in (("--parity-images", args.parity_images), ("--calibration-images", args.calibration_images)):
        if value < 0:
            raise WorkbenchError(f"{flag} {value}: give 0 or more images.")
    if not 18 <= args.opset <= 23:
        raise WorkbenchError(f"--opset {args.opset}: give an ONNX opset from 18 to 23 (the antialiased resize before "
                             "the recogniser needs 18; 18 is tested).")
    options = ExportOptions(out=args.out, run=args.run, dsr=args.dsr, edgeface=args.edgeface, int8=args.int8,
                            opset=args.opset, force=args.force, parity_images=args.parity_images,
                            calibration_images=args.calibration_images)
    return run_in_foreground(JobRequest("export", preset, args.data, options))


def cmd_enroll(args) -> int:
    from engine.deploy.gallery import enroll, enrolment_faces
    from engine.deploy.onnx_model import DeployedModel

    model = DeployedModel(args.model, "int8" if args.int8 else "fp32")
    per_subject = args.per_subject if args.per_subject is not None else int(((model.card.get("evaluation") or {}).get("protocol") or {})
                                          .get("gallery_per_subject") or 1)
    if per_subject < 1:
        raise WorkbenchError(f"--per-subject {per_subject}: give 1 or more.")
    faces, origin = enrolment_faces(args.src, per_subject)
    gallery = enroll(model, faces, origin)
    path = gallery.save(args.out)
    console.print(f"gallery {escape(str(path))}: {len(gallery.identities)} people from {len(faces)} photos "
                  f"({escape(origin)}); model {model.model_id} ({model.precision})")
    return 0


def cmd_identify(args) -> int:
    from engine.deploy.gallery import check_gallery, identify, load_gallery
    from engine.deploy.onnx_model import DeployedModel

    if args.top < 1:
        raise WorkbenchError(f"--top {args.top}: give 1 or more.")
    model = DeployedModel(args.model, "int8" if args.int8 else "fp32")
    gallery = load_gallery(args.gallery)
    check_gallery(model, gallery, args.gallery)
    threshold = model.threshold if args.threshold is None else args.threshold
    results = identify(model, gallery, args.images, args.top, threshold)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    table = Table(title=f"{len(results)} probes against {len(gallery.identities)} people (threshold {threshold:g})")
    table.add_column("image", overflow="fold")
    table.add_column("identity")
    table.add_column(f"top {args.top} (cosine)")
    for result in results:
        best = result["top"][0]["identity"] if result["accepted"] else "unknown"
        table.add_row(escape(result["image"]), escape(best),
                      escape(", ".join(f"{t['identity']} {t['score']:.3f}" for t in result["top"])))
    console.print(table)
    return 0
