"""The ``evaluate`` job: rank-1/5, CMC, open set, verification, PSNR/SSIM of DSR vs bicubic vs HR probes.

On the test split (identities unseen in training) the HR gallery is enrolled once
(:mod:`engine.evaluation.protocol`); the same probes are then recognised three ways:
``dsr`` (VLR -> DSR -> EdgeFace), ``bicubic`` (VLR -> bicubic -> EdgeFace) and ``hr`` (HR probes:
the upper bound). Results go to ``eval.json`` in the run directory (see :func:`eval_document`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from engine import atomic
from engine.errors import DataError, WeightsError
from engine.evaluation import metrics
from engine.evaluation.protocol import enrol, split_gallery_probes
from engine.events import Emit, Finished, Log, Metrics, Progress
from engine.jobs import JobRequest, StopFlag
from engine.runs import RunDir, latest_run
from engine.runtime import Runtime, resolve, seed_everything

JOB = "evaluate"
STAGE = "eval"
EVAL_BATCH = 64
CMC_MAX_RANK = 20
VARIANTS = ("dsr", "bicubic", "hr")
FAR_TARGETS = {"tar_at_far_1e-2": 1e-2, "tar_at_far_1e-3": 1e-3}


def recognition_metrics(sim: torch.Tensor, probe_labels: torch.Tensor, gallery_labels: torch.Tensor,
                        threshold: float, max_rank: int = CMC_MAX_RANK) -> dict[str, Any]:
    """Every recognition figure of one probe set against the enrolled gallery (fractions in [0, 1])."""
    ranks = metrics.probe_ranks(sim, probe_labels, gallery_labels)
    scores, genuine = metrics.verification_trials(sim, probe_labels, gallery_labels)
    open_set = metrics.open_set(sim, probe_labels, gallery_labels, threshold)
    result = {
        "rank1": metrics.rank_k_accuracy(ranks, 1),
        "rank5": metrics.rank_k_accuracy(ranks, 5),
        "auc": metrics.roc_auc(scores, genuine),
        "eer": metrics.equal_error_rate(scores, genuine),
        **{key: metrics.tar_at_far(scores, genuine, far) for key, far in FAR_TARGETS.items()},
        "open_set_accuracy": open_set.accepted_correct,
        "open_set_rejected": open_set.rejected,
        "open_set_false_accept": open_set.false_accept,
        "cmc": metrics.cmc_curve(ranks, min(max_rank, len(gallery_labels))).tolist(),
    }
    return result


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class _Recogniser:
    """EdgeFace in eval mode: [0, 1] images -> L2-normalised embeddings, in batches."""

    def __init__(self, path: Path, runtime: Runtime):
        from engine.models.edgeface import load_recogniser, prepare_input

        # variant None: evaluate whichever EdgeFace the file holds (it is recorded in eval.json)
        self.model = load_recogniser(path, None).to(runtime.device).eval()
        self.variant = getattr(self.model, "variant", "unknown")
        self.prepare_input = prepare_input
        self.runtime = runtime

    @torch.no_grad()
    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            out = self.model(self.prepare_input(images01))
        return torch.nn.functional.normalize(out.float(), dim=1)


def _probe_maker(variant: str, dsr_model, hr_size: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(vlr01, hr01) -> the probe images of ``variant`` in [0, 1]."""
    from engine.models.dsr import upscale_bicubic

    if variant == "hr":
        return lambda vlr, hr: hr
    if variant == "bicubic":
        return lambda vlr, hr: upscale_bicubic(vlr, hr_size)
    return lambda vlr, hr: dsr_model(vlr).float().clamp(0.0, 1.0)


def _embed_probes(variant: str, make, split, index: torch.Tensor, recogniser: _Recogniser, runtime: Runtime,
                  emit: Emit, stop: StopFlag, number: int) -> tuple[torch.Tensor, float | None, float]:
    """Embeddings of the probes of ``variant`` plus mean PSNR (None for ``hr``) and SSIM against HR."""
    from engine.data import to_float
    from engine.metrics.image import psnr, ssim

    chunks, psnrs, ssims = [], [], []
    steps = math.ceil(len(index) / EVAL_BATCH)
    for step, batch in enumerate(index.split(EVAL_BATCH), start=1):
        stop.check()
        vlr = to_float(split.vlr[batch].to(runtime.device))
        hr = to_float(split.hr[batch].to(runtime.device))
        with torch.no_grad(), runtime.autocast():
            probes = make(vlr, hr)
        probes = probes.float().clamp(0.0, 1.0)
        if variant != "hr":
            psnrs.append(psnr(probes, hr).cpu())
        ssims.append(ssim(probes, hr).cpu())
        chunks.append(recogniser.embed(probes).cpu())
        emit(Progress(job=JOB, stage=STAGE, epoch=number, epochs=len(VARIANTS), step=step, steps=steps))
    mean_psnr = float(torch.cat(psnrs).mean()) if psnrs else None
    return torch.cat(chunks), mean_psnr, float(torch.cat(ssims).mean())


def _recogniser_path(request: JobRequest, data_root: Path, emit: Emit, stop: StopFlag) -> tuple[Path, str]:
    """--edgeface, else this preset's latest finetune best.pt, else the preset's base recogniser."""
    given = request.options.get("edgeface")
    if given:
        return Path(given).expanduser(), "--edgeface"
    finetuned = latest_run(request.preset.runtime.runs_dir, request.preset.name, "finetune", require="best.pt")
    if finetuned is not None:
        return finetuned / "best.pt", f"latest finetune run {finetuned.name}"
    from engine.trainers.finetune import recogniser_weights

    return Path(recogniser_weights(request.preset, data_root, emit, stop)), "base recogniser (not fine-tuned)"


def _dsr_path(request: JobRequest) -> tuple[Path | None, str]:
    """--dsr, else this preset's latest train-dsr best.pt, else none."""
    given = request.options.get("dsr")
    if given:
        return Path(given).expanduser(), "--dsr"
    trained = latest_run(request.preset.runtime.runs_dir, request.preset.name, "train-dsr", require="best.pt")
    if trained is not None:
        return trained / "best.pt", f"latest train-dsr run {trained.name}"
    return None, "none"


def _load_dsr_for(path: Path, split, runtime: Runtime):
    from engine.models.dsr import load_dsr

    model, checkpoint = load_dsr(path, runtime.device)
    config = checkpoint["config"]
    if tuple(config["vlr_size"]) != split.vlr_size or int(config["hr_size"]) != split.hr_size:
        raise WeightsError(f"DSR checkpoint {path} maps VLR {tuple(config['vlr_size'])} (width, height) to "
                           f"{config['hr_size']}x{config['hr_size']}, but the test split holds VLR {split.vlr_size} "
                           f"and HR {split.hr_size}. Pass a DSR trained for this preset's sizes (--dsr) or a preset "
                           "whose data.vlr_width/vlr_height/hr_size match the checkpoint.")
    return model


def eval_document(results: dict[str, dict | None], protocol: dict[str, Any]) -> dict[str, Any]:
    """The eval.json document: ``dsr``/``bicubic``/``hr`` (a dict or null) and ``protocol``.

    Each variant holds rank1, rank5, auc, eer, tar_at_far_1e-2, tar_at_far_1e-3,
    open_set_accuracy, open_set_rejected, open_set_false_accept, psnr (dB), ssim and cmc (list,
    cmc[k-1] = rank-k rate). Non-finite numbers are written as null (hr's psnr is always null).
    """
    doc: dict[str, Any] = {"protocol": protocol}
    for variant in VARIANTS:
        values = results.get(variant)
        doc[variant] = None if values is None else {
            k: (v if isinstance(v, list) else _finite_or_none(v)) for k, v in values.items()}
    return doc


def run_evaluate(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    from engine.data import load_split, to_float
    from engine.data.resolve import job_data_root

    preset = request.preset
    runtime = resolve(preset)
    seed_everything(preset.runtime.seed)
    data_root = job_data_root(preset, request.data, emit, JOB)
    recogniser_file, recogniser_source = _recogniser_path(request, data_root, emit, stop)
    dsr_file, dsr_source = _dsr_path(request)
    split = load_split(data_root, "test", preset.vlr_size, preset.data.hr_size)
    stop.check()

    protocol_split = split_gallery_probes(split.names, split.labels, preset.eval.gallery_per_subject)
    protocol_split.check_disjoint()
    if len(protocol_split.probe_index) == 0:
        raise DataError(f"{data_root}: the test split has no probe images (every subject has a single image, "
                        "which can only enrol). Give each test subject at least two images, or lower "
                        "eval.gallery_per_subject.")
    run = RunDir.for_job(preset, JOB, request.options.get("run_dir"))

    recogniser = _Recogniser(recogniser_file, runtime)
    emit(Log(JOB, f"recogniser: {recogniser_file} ({recogniser_source})"))
    dsr_model = _load_dsr_for(dsr_file, split, runtime) if dsr_file is not None else None
    if dsr_model is None:
        emit(Log(JOB, "no DSR checkpoint (none given with --dsr and no train-dsr run of this preset): "
                      "only bicubic and hr were evaluated", level="warning"))
    else:
        emit(Log(JOB, f"DSR: {dsr_file} ({dsr_source})"))

    gallery_hr = split.hr[protocol_split.gallery_index]
    gallery_embeddings = torch.cat([recogniser.embed(to_float(chunk.to(runtime.device))).cpu()
                                    for chunk in gallery_hr.split(EVAL_BATCH)])
    gallery_labels, gallery_means = enrol(gallery_embeddings, split.labels[protocol_split.gallery_index])
    probe_labels = split.labels[protocol_split.probe_index]
    threshold = preset.eval.threshold

    results: dict[str, dict | None] = {"dsr": None}
    for number, variant in enumerate(VARIANTS, start=1):
        if variant == "dsr" and dsr_model is None:
            continue
        emit(Log(JOB, f"evaluating {variant} probes ({len(probe_labels)} images)"))
        embeddings, mean_psnr, mean_ssim = _embed_probes(
            variant, _probe_maker(variant, dsr_model, split.hr_size), split, protocol_split.probe_index,
            recogniser, runtime, emit, stop, number)
        sim = metrics.cosine_similarity_matrix(embeddings, gallery_means)
        results[variant] = {**recognition_metrics(sim, probe_labels, gallery_labels, threshold),
                            "psnr": mean_psnr, "ssim": mean_ssim}

    protocol = {
        "split": "test", "data_root": str(data_root), "subjects": len(gallery_labels),
        "gallery_images": len(protocol_split.gallery_index), "gallery_per_subject": preset.eval.gallery_per_subject,
        "probes": len(probe_labels), "threshold": threshold, "seed": preset.runtime.seed,
        "vlr_size": list(split.vlr_size), "hr_size": split.hr_size,
        "recogniser": str(recogniser_file), "recogniser_source": recogniser_source,
        "recogniser_variant": recogniser.variant,
        "dsr": None if dsr_file is None else str(dsr_file), "dsr_source": dsr_source,
        "ties": "pessimistic: a wrong subject scoring as high as the right one ranks ahead of it",
        "notes": "hr probes are the HR images themselves: their PSNR is infinite and written as null",
    }
    document = eval_document(results, protocol)
    atomic.write_json(run.path / "eval.json", document)

    values = {f"{variant}_{key}": float(value) for variant, body in results.items() if body
              for key, value in body.items() if isinstance(value, float) and math.isfinite(value)}
    metric_event = Metrics(job=JOB, stage=STAGE, epoch=0, step=0, split="test", values=values)
    run.log_metrics(metric_event)
    emit(metric_event)
    summary = {f"{variant}_rank1": (body["rank1"] if body else None) for variant, body in results.items()}
    summary.update({"probes": len(probe_labels), "subjects": len(gallery_labels),
                    "eval_json": str(run.path / "eval.json")})
    run.write_summary(summary)
    return Finished(job=JOB, run_dir=run.path, summary=summary)
