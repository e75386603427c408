"""Deployed probe latency and throughput: PyTorch eager vs ONNX Runtime fp32 vs int8, each with its rank-1.

    python benchmarks/bench_export.py RUN_DIR [--model DIR] [--threads 2] [--repeats 200]

RUN_DIR is a finished pipeline or evaluate run; without --model it is exported (with --int8) into a temporary
folder first. On the run's test split, with the gallery rule of ``evaluate`` (no distractors), each engine
embeds the gallery with its own gallery graph and the probes with its probe graph: rank-1 of each, probe
latency at batch 1 (p50, p95 over --repeats probes) and throughput at batch 64 (the median of 5 batches), the
engines timed in turns so that the machine's noise falls on all alike. PyTorch eager is the probe path as ``evaluate`` runs it. Goals (issue 35, cpu-real on
lfw-dev): ONNX Runtime fp32 >= 1.5x eager at batch 1; int8 >= 2x eager with <= 1 rank-1 point lost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.layout import subject_of  # noqa: E402
from engine.evaluation.gallery_rule import gallery_members, mean_templates  # noqa: E402


def _export(run: Path, folder: Path) -> Path:
    from workbench.cli.main import main as cli

    model = folder / "model"
    if cli(["export", str(run), "--out", str(model), "--int8"]) != 0:
        raise SystemExit("the export failed (its message is above)")
    return model


def _faces(card: dict, run_eval: dict):
    from engine.data import load_split

    root = Path(card["parity_data"])
    split = load_split(root, "test", tuple(card["probe"]["size"]), card["gallery"]["size"][0])
    per_subject = int((run_eval.get("protocol") or {}).get("gallery_per_subject") or 1)
    subjects = [subject_of(n) for n in split.names]
    gallery, probes = gallery_members(split.names, subjects, per_subject)
    hr = split.hr.permute(0, 2, 3, 1).contiguous().numpy()
    vlr = split.vlr.permute(0, 2, 3, 1).contiguous().numpy()
    return (hr[gallery], [subjects[i] for i in gallery]), (vlr[probes], [subjects[i] for i in probes]), root


def _rank1(gallery_embeddings, gallery_names, probe_embeddings, probe_names) -> float:
    identities, templates = mean_templates(gallery_embeddings, gallery_names)    # as enroll and evaluate enrol
    best = (probe_embeddings @ templates.T).argmax(axis=1)
    return float(np.mean([identities[b] == p for b, p in zip(best, probe_names)]))


BLOCK = 20          # batch-1 probes an engine runs before the next engine's turn
SETTLE_S = 0.05     # pause between turns: the last engine's spinning threads go idle before the next one runs


def _timings(embedders: dict, probes: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """Each engine's batch-1 latency (p50, p95) and batch-64 throughput. The engines take turns (blocks of
    :data:`BLOCK` probes, then one batch of 64 each round), so that a noisy moment of the machine falls on all
    of them alike; between turns a short pause lets the previous engine's threads stop spinning (on 2 cores
    ONNX Runtime's and PyTorch's thread pools would otherwise fight)."""
    batch = np.concatenate([probes] * (64 // len(probes) + 1))[:64]
    singles: dict[str, list[float]] = {name: [] for name in embedders}
    batched: dict[str, list[float]] = {name: [] for name in embedders}
    for embed in embedders.values():                          # warm-up
        embed(probes[:1])
        embed(batch)
    for first in range(0, repeats, BLOCK):
        for name, embed in embedders.items():
            time.sleep(SETTLE_S)
            for i in range(first, min(first + BLOCK, repeats)):
                started = time.perf_counter()
                embed(probes[i % len(probes):i % len(probes) + 1])
                singles[name].append(time.perf_counter() - started)
            if len(batched[name]) < 5:
                started = time.perf_counter()
                embed(batch)
                batched[name].append(time.perf_counter() - started)
    return {name: {"p50_ms": statistics.median(times) * 1e3, "p95_ms": statistics.quantiles(times, n=20)[18] * 1e3,
                   "per_s_batch64": 64 / statistics.median(batched[name])} for name, times in singles.items()}


class _AsEvaluated(torch.nn.Module):
    """The probe path as ``evaluate`` runs it in PyTorch (the trained DSRNet: F.interpolate, pixel shuffle), on
    uint8 NHWC faces: what a user runs without exporting. The exported graph computes the same with exact
    rewrites (``DSRNet.for_deployment``) that suit ONNX Runtime; in PyTorch its transposed-convolution shuffle
    is slower than the pixel shuffle."""

    def __init__(self, dsr, recogniser):
        super().__init__()
        self.dsr, self.recogniser = dsr, recogniser

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        from engine.data.pairs import to_float
        from engine.models.edgeface import prepare_input

        restored = self.dsr(to_float(faces.permute(0, 3, 1, 2))).clamp(0.0, 1.0)
        return torch.nn.functional.normalize(self.recogniser(prepare_input(restored)), dim=1)


def _engines(card: dict, model: Path, threads: int):
    from engine.deploy.graphs import GalleryGraph
    from engine.deploy.onnx_model import DeployedModel
    from engine.models.dsr import load_dsr
    from engine.models.edgeface import load_recogniser

    recogniser = load_recogniser(card["source"]["recogniser"], None).float().eval()
    dsr = load_dsr(card["source"]["dsr"])[0].float().eval()
    probe = _AsEvaluated(dsr, recogniser)
    gallery = GalleryGraph(recogniser, int(card["gallery"]["size"][0])).eval()

    def eager(module):
        def run(faces):
            with torch.inference_mode():
                return module(torch.from_numpy(faces)).numpy()
        return run

    engines = {"PyTorch eager fp32": (eager(probe), eager(gallery))}
    for precision in ("fp32", "int8"):
        if precision == "int8" and not card.get("int8"):
            continue
        deployed = DeployedModel(model, precision, threads=threads)
        engines[f"ONNX Runtime {precision}"] = (lambda f, d=deployed: d.embed("probe", f),
                                                lambda f, d=deployed: d.embed("gallery", f))
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--model", type=Path, help="an exported model folder of RUN (default: export it now)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of PyTorch and ONNX Runtime")
    parser.add_argument("--repeats", type=int, default=200, help="batch-1 probes timed per engine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or _export(args.run, Path(scratch))
        card = json.loads((model / "model.json").read_text())
        run_eval = json.loads(Path(card["source"]["eval_json"]).read_text()) if card["source"]["eval_json"] else {}
        (gallery_faces, gallery_names), (probe_faces, probe_names), root = _faces(card, run_eval)
        print(f"{args.run}: {len(probe_faces)} probes against {len(set(gallery_names))} people of {root} "
              f"(no distractors), {args.threads} threads; evaluate's dsr rank-1 "
              f"{100 * (run_eval.get('dsr') or {}).get('rank1', float('nan')):.1f}%")
        engines = _engines(card, model, args.threads)
        timings = _timings({name: probe for name, (probe, _gallery) in engines.items()}, probe_faces, args.repeats)
        rows = {name: {"rank1": _rank1(gallery(gallery_faces), gallery_names, probe(probe_faces), probe_names),
                       **timings[name]} for name, (probe, gallery) in engines.items()}
    eager = rows["PyTorch eager fp32"]
    print(f"{'engine':22} {'rank-1':>7} {'p50 ms':>8} {'p95 ms':>8} {'img/s @64':>10} {'x eager @1':>11}")
    for name, row in rows.items():
        print(f"{name:22} {100 * row['rank1']:6.1f}% {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} "
              f"{row['per_s_batch64']:10.0f} {eager['p50_ms'] / row['p50_ms']:10.2f}x")
    fp32, int8 = rows.get("ONNX Runtime fp32"), rows.get("ONNX Runtime int8")
    if fp32:
        print(f"goal ONNX Runtime fp32 >= 1.5x eager at batch 1: {eager['p50_ms'] / fp32['p50_ms']:.2f}x")
    if int8:
        print(f"goal int8 >= 2x eager: {eager['p50_ms'] / int8['p50_ms']:.2f}x, rank-1 lost "
              f"{100 * (eager['rank1'] - int8['rank1']):+.2f} points (goal <= 1)")


if __name__ == "__main__":
    main()
