"""The ``evaluate`` job: rank-1/5, CMC, open set, verification, PSNR/SSIM of DSR vs bicubic vs HR probes.

On the test split (identities unseen in training) the HR gallery is enrolled once per recogniser
(:mod:`engine.evaluation.protocol`); the same probes are then scored in *rows*, each a probe
kind (``dsr``: VLR -> DSR, ``bicubic``: VLR -> bicubic, ``hr``: the HR image) and the recogniser
that belongs to it (:data:`ROLES`):

- ``dsr``: DSR probes, the main recogniser (``--edgeface``, else the latest finetune run, which
  was fine-tuned on DSR outputs, else the base recogniser);
- ``bicubic``: bicubic probes, the recogniser fine-tuned on bicubic images (``edgeface_bicubic``)
  when given, else the main recogniser (the protocol records which);
- ``dsr_base`` / ``bicubic_base``: the same probes through the base recogniser, when it is known
  (``edgeface_base``, ``runtime.edgeface_weights`` or the latest pretrain run) and differs;
- ``hr``: HR probes, the main recogniser (the upper bound).

``options["rows"]`` (``[{"name", "probes", "recogniser"}]``) replaces that plan. Each row gets
bootstrap intervals and the compared pairs a paired difference with McNemar
(:mod:`engine.evaluation.stats`). Results go to ``eval.json`` (see :func:`eval_document`).
A recogniser or DSR with non-finite weights or outputs is refused, naming the file; a recogniser
that gives every gallery image the same embedding is reported and not scored.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from engine.io import atomic
from engine.errors import DataError, WeightsError, WorkbenchError
from engine.data.layout import DISTRACTORS
from engine.data.camera.splits import camera_split
from engine.evaluation import cameras, distractors, metrics, stats, wording
from engine.evaluation.protocol import enrol, split_gallery_probes
from engine.events import Emit, Finished, Log, Metrics, Progress
from engine.jobs.registry import JobRequest, StopFlag
from engine.jobs.recogniser import latest_finished_pretrain, preset_weights, recogniser_weights
from engine.runs.status import pick_run
from engine.runs.run_dir import RunDir
from engine.runtime import Runtime, resolve, seed_everything

JOB = "evaluate"
STAGE = "eval"
EVAL_BATCH = 64
CMC_MAX_RANK = 20
ROC_POINTS = 200
VARIANTS = ("dsr", "bicubic", "hr")                       # the headline rows (today's eval.json keys)
ROW_KEYS = ("dsr", "dsr_base", "bicubic", "bicubic_base", "hr")
PROBE_KINDS = ("dsr", "bicubic", "hr")
ROLES = ("dsr_finetuned", "bicubic_finetuned", "base")
FAR_TARGETS = {"tar_at_far_1e-2": 1e-2, "tar_at_far_1e-3": 1e-3}
PRESET_CAMERA = "preset"     # a DSR checkpoint from before cameras were recorded: the preset's [degrade] stands in
DEGENERATE_SPREAD = 1e-3    # max distance of a gallery embedding from their mean below this = collapsed
# (name, row A, row B): rank-1 of A minus rank-1 of B, on the same probes
COMPARISONS = (
    ("dsr_vs_bicubic", "dsr", "bicubic"),
    ("dsr_vs_bicubic_base", "dsr", "bicubic_base"),      # so DSR meets the best bicubic row, whichever it is
    ("dsr_finetuned_vs_base", "dsr", "dsr_base"),
    ("bicubic_finetuned_vs_base", "bicubic", "bicubic_base"),
    ("dsr_vs_bicubic_base_recogniser", "dsr_base", "bicubic_base"),
)


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
        "roc": roc_curve(scores, genuine),
    }
    return result


def roc_curve(scores, genuine, points: int = ROC_POINTS) -> dict[str, list[float]]:
    """The ROC (FAR, TAR) thinned to at most ``points`` operating points, ends kept (for plots)."""
    far, tar, _ = metrics.roc_points(scores, genuine)
    if len(far) > points:
        keep = sorted(set(torch.linspace(0, len(far) - 1, points).round().long().tolist()))
        far, tar = far[keep], tar[keep]
    return {"far": [round(float(v), 6) for v in far], "tar": [round(float(v), 6) for v in tar]}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def check_finite_weights(model: torch.nn.Module, path: Path, what: str) -> None:
    """WeightsError naming ``path`` when any parameter or buffer holds NaN or inf."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{path}: this {what} holds non-finite weights (NaN or inf, first in '{name}'), so "
                               "it cannot be evaluated: a NaN model ties every score and can look perfect. The "
                               "training diverged; use an earlier checkpoint (best.pt rather than last.pt) or "
                               "retrain with a lower learning rate.")


def _check_finite_output(values: torch.Tensor, path: Path, what: str) -> None:
    if not bool(torch.isfinite(values).all()):
        raise WeightsError(f"{path}: this {what} gives non-finite outputs (NaN or inf) on the test images, so its "
                           "rows cannot be scored. The weights are damaged or the training diverged; use an "
                           "earlier checkpoint or retrain with a lower learning rate.")


class _Recogniser:
    """EdgeFace in eval mode: [0, 1] images -> L2-normalised embeddings, in batches."""

    def __init__(self, path: Path, runtime: Runtime):
        from engine.models.edgeface import load_recogniser, prepare_input

        # variant None: evaluate whichever EdgeFace the file holds (it is recorded in eval.json)
        self.path = path
        self.model = load_recogniser(path, None).to(runtime.device).eval()
        check_finite_weights(self.model, path, "recogniser")
        self.variant = getattr(self.model, "variant", "unknown")
        self.prepare_input = prepare_input
        self.runtime = runtime

    @torch.no_grad()
    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            out = self.model(self.prepare_input(images01)).float()
        _check_finite_output(out, self.path, "recogniser")
        return torch.nn.functional.normalize(out, dim=1)


def check_not_degenerate(embeddings: torch.Tensor, path: Path) -> None:
    """WorkbenchError when a recogniser maps every gallery image to (nearly) the same embedding."""
    if len(embeddings) < 2:
        return
    spread = float((embeddings - embeddings.mean(dim=0)).norm(dim=1).max())
    if spread < DEGENERATE_SPREAD:
        raise WeightsError(f"{path}: this recogniser gives every gallery image the same embedding (largest "
                           f"distance from their mean {spread:.1e}): a collapsed model. Its rows are not scored, "
                           "because every probe would tie with every subject. Use an earlier checkpoint, or "
                           "fine-tune again with a lower ArcFace margin/scale or learning rate (the tips panel "
                           "lists the guide's fixes for a collapse).")


def _probe_maker(kind: str, dsr_model, dsr_file: Path | None, hr_size: int
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(vlr01, hr01) -> the probe images of ``kind`` in [0, 1]."""
    from engine.models.dsr import upscale_bicubic

    if kind == "hr":
        return lambda vlr, hr: hr
    if kind == "bicubic":
        return lambda vlr, hr: upscale_bicubic(vlr, hr_size)

    def through_dsr(vlr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        out = dsr_model(vlr).float()
        _check_finite_output(out, dsr_file, "DSR checkpoint")
        return out.clamp(0.0, 1.0)
    return through_dsr


def _embed_probes(kind: str, make, split, index: torch.Tensor, recognisers: dict[str, _Recogniser],
                  runtime: Runtime, emit: Emit, stop: StopFlag, number: int, kinds: int
                  ) -> tuple[dict[str, torch.Tensor], float | None, float]:
    """Embeddings of the ``kind`` probes by each recogniser, plus mean PSNR (None for hr) and SSIM vs HR."""
    from engine.data import to_float
    from engine.metrics.image import psnr, ssim

    chunks: dict[str, list[torch.Tensor]] = {role: [] for role in recognisers}
    psnrs, ssims = [], []
    steps = math.ceil(len(index) / EVAL_BATCH)
    for step, batch in enumerate(index.split(EVAL_BATCH), start=1):
        stop.check()
        vlr = to_float(split.vlr[batch].to(runtime.device))
        hr = to_float(split.hr[batch].to(runtime.device))
        with torch.no_grad(), runtime.autocast():
            probes = make(vlr, hr)
        probes = probes.float().clamp(0.0, 1.0)
        if kind != "hr":
            psnrs.append(psnr(probes, hr).cpu())
        ssims.append(ssim(probes, hr).cpu())
        for role, recogniser in recognisers.items():
            chunks[role].append(recogniser.embed(probes).cpu())
        emit(Progress(job=JOB, stage=STAGE, epoch=number, epochs=kinds, step=step, steps=steps))
    mean_psnr = float(torch.cat(psnrs).mean()) if psnrs else None
    return {role: torch.cat(parts) for role, parts in chunks.items()}, mean_psnr, float(torch.cat(ssims).mean())


def _base_recogniser(request: JobRequest, data_root: Path) -> tuple[Path, str] | None:
    """The base (not fine-tuned) recogniser when known without training one: edgeface_base,
    runtime.edgeface_weights, else the latest pretrain run's best.pt with the preset's recogniser settings."""
    given = request.options.edgeface_base
    if given:
        return Path(given).expanduser(), "--edgeface-base"
    weights = preset_weights(request.preset)
    if weights is not None:
        return weights, "runtime.edgeface_weights"
    pretrained = latest_finished_pretrain(request.preset, data_root).run
    if pretrained is not None:
        return pretrained / "best.pt", f"latest finished pretrain run {pretrained.name}"
    return None


def _check_files_exist(request: JobRequest) -> None:
    """Every weights file the request or the preset names exists."""
    from engine.models.edgeface import OBTAIN_WEIGHTS

    named = {f"--{k.replace('_', '-')}": getattr(request.options, k)
             for k in ("dsr", "edgeface", "edgeface_bicubic", "edgeface_base")}
    preset_weights(request.preset)
    for flag, value in named.items():
        if value and not Path(value).expanduser().is_file():
            advice = OBTAIN_WEIGHTS if flag != "--dsr" else "Give the best.pt of a train-dsr run."
            raise WeightsError(f"{flag} names {value}, which is not a file. {advice}")


def _recogniser_files(request: JobRequest, data_root: Path, emit: Emit, stop: StopFlag) -> dict[str, tuple[Path, str]]:
    """{role: (file, source)}: the main recogniser under its role, plus bicubic_finetuned and base when known."""
    found: dict[str, tuple[Path, str]] = {}
    given = request.options.edgeface
    finetuned = None if given else pick_run(request.preset.runtime.runs_dir, request.preset.name, "finetune")
    if given:
        found["dsr_finetuned"] = (Path(given).expanduser(), "--edgeface")
    elif finetuned is not None:
        found["dsr_finetuned"] = (finetuned[0] / "best.pt", f"latest finetune run {finetuned[0].name}, {finetuned[1]}")
    base = _base_recogniser(request, data_root)
    if "dsr_finetuned" not in found and base is None:
        base = (Path(recogniser_weights(request.preset, data_root, emit, stop)), "base recogniser (not fine-tuned)")
    if base is not None:
        found["base"] = base
    bicubic = request.options.edgeface_bicubic
    if bicubic:
        found["bicubic_finetuned"] = (Path(bicubic).expanduser(), "--edgeface-bicubic")
    return found


def main_role(files: dict[str, tuple[Path, str]]) -> str:
    return "dsr_finetuned" if "dsr_finetuned" in files else "base"


def plan_rows(files: dict[str, tuple[Path, str]], have_dsr: bool, requested: list | None = None
              ) -> dict[str, tuple[str, str]]:
    """{row name: (probe kind, recogniser role)}: ``requested`` when given, else the default plan."""
    if requested:
        rows = {}
        for spec in requested:
            name, kind, role = spec.get("name"), spec.get("probes"), spec.get("recogniser")
            if kind not in PROBE_KINDS or role not in ROLES or not name:
                raise WorkbenchError(f"evaluation row {spec!r}: give a name, probes in {PROBE_KINDS} and a "
                                     f"recogniser in {ROLES}.")
            if role not in files:
                raise WorkbenchError(f"evaluation row '{name}' asks for the {role} recogniser, but none was given "
                                     f"(--edgeface for dsr_finetuned, --edgeface-bicubic, --edgeface-base).")
            if kind == "dsr" and not have_dsr:
                raise WorkbenchError(f"evaluation row '{name}' scores DSR probes, but there is no DSR checkpoint: "
                                     "pass --dsr or train one with `vlr-workbench train-dsr`.")
            rows[name] = (kind, role)
        return rows
    main = main_role(files)
    same_as_base = "base" in files and main != "base" and files["base"][0] == files[main][0]
    bicubic_role = "bicubic_finetuned" if "bicubic_finetuned" in files else main
    plan = {}
    if have_dsr:
        plan["dsr"] = ("dsr", main)
        if "base" in files and main != "base" and not same_as_base:
            plan["dsr_base"] = ("dsr", "base")
    plan["bicubic"] = ("bicubic", bicubic_role)
    if "base" in files and bicubic_role != "base" and files["base"][0] != files[bicubic_role][0]:
        plan["bicubic_base"] = ("bicubic", "base")
    plan["hr"] = ("hr", main)
    return plan


def _dsr_path(request: JobRequest) -> tuple[Path | None, str]:
    """--dsr, else this preset's latest train-dsr best.pt, else none."""
    given = request.options.dsr
    if given:
        return Path(given).expanduser(), "--dsr"
    trained = pick_run(request.preset.runtime.runs_dir, request.preset.name, "train-dsr")
    if trained is not None:
        return trained[0] / "best.pt", f"latest train-dsr run {trained[0].name}, {trained[1]}"
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
    check_finite_weights(model, path, "DSR checkpoint")
    model.training_camera = checkpoint.get("camera", PRESET_CAMERA)   # what the protocol records it trained on
    return model


def _clean_row(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (list, dict)) else _finite_or_none(v)) for k, v in values.items()}


def eval_document(results: dict[str, dict | None], protocol: dict[str, Any],
                  intervals: dict[str, Any] | None = None, comparisons: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The eval.json document: ``dsr``/``bicubic``/``hr`` (a dict or null), any other row by name,
    ``protocol``, and (when computed) ``intervals`` and ``comparisons``.

    Each row holds rank1, rank5, auc, eer, tar_at_far_1e-2, tar_at_far_1e-3, open_set_accuracy,
    open_set_rejected, open_set_false_accept, psnr (dB), ssim, cmc (list, cmc[k-1] = rank-k rate)
    and roc ({"far": [...], "tar": [...]}, thinned). Non-finite numbers are written as null (hr's
    psnr is always null). ``intervals`` = {"method", "resamples", "seed", "level", "rows": {row:
    {metric: [lo, hi]}}}; ``comparisons`` = {name: {"a", "b", "metric", "difference", "interval",
    "mcnemar": {"a_only", "b_only", "p"}, "significant"}}.
    """
    doc: dict[str, Any] = {"protocol": protocol}
    for variant in VARIANTS:
        values = results.get(variant)
        doc[variant] = None if values is None else _clean_row(values)
    for name, values in results.items():
        if name not in VARIANTS and values is not None:
            doc[name] = _clean_row(values)
    if intervals is not None:
        doc["intervals"] = intervals
    if comparisons is not None:
        doc["comparisons"] = comparisons
    return doc


def uncertainty(scored: dict[str, dict[str, Any]], probe_labels: torch.Tensor, resamples: int, seed: int
                ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(intervals, comparisons) of the scored rows ({row: {"sim", "ranks", "genuine"}}); None when off."""
    if resamples <= 0 or not scored:
        return None, None
    weights = stats.subject_weights(probe_labels, resamples, seed)
    intervals = {"method": stats.METHOD, "resamples": resamples, "seed": seed, "level": stats.LEVEL,
                 "unit": "test subject", "rows": {}}
    for name, row in scored.items():
        intervals["rows"][name] = stats.row_intervals(row["sim"], row["ranks"], row["genuine"], weights,
                                                      FAR_TARGETS)
    trials = len(probe_labels) * len(next(iter(scored.values()))["sim"][0])
    intervals["verification"] = (
        "exact (every distinct score a threshold)" if trials * resamples <= stats.EXACT_WORK else
        f"thresholds at {stats.VERIFICATION_BINS} score quantiles ({trials} trials x {resamples} resamples)")
    comparisons = {}
    for name, a, b in COMPARISONS:
        if a in scored and b in scored:
            comparisons[name] = {"a": a, "b": b, "metric": "rank1", "label": f"{a} vs {b} (rank-1)",
                                 **stats.paired_difference(scored[a]["ranks"] == 1, scored[b]["ranks"] == 1,
                                                           weights)}
    return intervals, comparisons


def run_evaluate(request: JobRequest, emit: Emit, stop: StopFlag) -> Finished:
    from engine.data import load_split

    preset = request.preset
    runtime = resolve(preset)
    seed_everything(preset.runtime.seed)
    _check_files_exist(request)   # before the data: a missing weights file must not wait for demo faces
    data_root, n_distractors = _data_root_and_distractors(request, emit)
    probes_camera = cameras.probe_camera(preset, data_root)     # refused on a degraded dataset, before any work
    files = _recogniser_files(request, data_root, emit, stop)
    dsr_file, dsr_source = _dsr_path(request)
    split = load_split(data_root, "test", preset.vlr_size, preset.data.hr_size)
    if probes_camera is not None:
        split = camera_split(split, probes_camera, preset.runtime.seed, "probe")
        emit(Log(JOB, f"unseen camera: test probes made from HR through {probes_camera.to_spec()} (seeded per image); "
                      "the gallery stays HR"))
    stop.check()

    protocol_split = split_gallery_probes(split.names, split.labels, preset.eval.gallery_per_subject)
    protocol_split.check_disjoint()
    if len(protocol_split.probe_index) == 0:
        raise DataError(f"{data_root}: the test split has no probe images (every subject has a single image, "
                        "which can only enrol). Give each test subject at least two images, or lower "
                        "eval.gallery_per_subject.")
    plan = plan_rows(files, dsr_file is not None, request.options.rows)
    chosen = distractors.load(data_root, n_distractors, preset.runtime.seed, preset.vlr_size, preset.data.hr_size)
    run = RunDir.for_job(preset, JOB, request.options.run_dir)

    recognisers = _load_recognisers(plan, files, runtime, emit)
    dsr_model = _load_dsr_for(dsr_file, split, runtime) if dsr_file is not None else None
    if dsr_model is None:
        emit(Log(JOB, "no DSR checkpoint (none given with --dsr and no train-dsr run of this preset): "
                      "only bicubic and hr were evaluated", level="warning"))
    else:
        emit(Log(JOB, f"DSR: {dsr_file} ({dsr_source})"))
    if len(chosen):
        emit(Log(JOB, f"gallery: {split.num_subjects} test subjects + {len(chosen)} distractors (no probe)"))

    gallery_hr, gallery_labels_all = distractors.extend_gallery(
        split.hr[protocol_split.gallery_index], split.labels[protocol_split.gallery_index], chosen,
        split.num_subjects)
    templates = _enrol_gallery(recognisers, gallery_hr, gallery_labels_all, runtime)
    gallery_labels = next(iter(templates.values()))[0]
    probe_labels = split.labels[protocol_split.probe_index]
    results, scored = _score_rows(plan, recognisers, templates, split, protocol_split, dsr_model, dsr_file,
                                  preset.eval.threshold, runtime, emit, stop)
    resamples = stats.DEFAULT_RESAMPLES if request.options.bootstrap is None else int(request.options.bootstrap)
    intervals, comparisons = uncertainty(scored, probe_labels, resamples, preset.runtime.seed)

    protocol = _protocol_record(preset, data_root, split, protocol_split, plan, files, recognisers, dsr_file,
                                dsr_source, subjects=len(gallery_labels) - len(chosen), probes=len(probe_labels))
    protocol.update(_distractor_record(chosen, gallery_labels, protocol["gallery_images"]))
    protocol["camera"] = cameras.camera_record(preset, data_root, probes_camera,
                                               getattr(dsr_model, "training_camera", PRESET_CAMERA))
    document = eval_document(results, protocol, intervals, comparisons)
    atomic.write_json(run.path / "eval.json", document)

    values = {f"{variant}_{key}": float(value) for variant, body in results.items() if body
              for key, value in body.items() if isinstance(value, float) and math.isfinite(value)}
    metric_event = Metrics(job=JOB, stage=STAGE, epoch=0, step=0, split="test", values=values)
    run.log_metrics(metric_event)
    emit(metric_event)
    summary = {f"{variant}_rank1": (body["rank1"] if body else None) for variant, body in results.items()}
    summary.update({"probes": len(probe_labels), "subjects": protocol["subjects"], "distractors": len(chosen),
                    "camera": wording.camera_protocol_text(protocol["camera"]), "eval_json": str(run.path / "eval.json")})
    run.write_summary(summary)
    return Finished(job=JOB, run_dir=run.path, summary=summary)


def _data_root_and_distractors(request: JobRequest, emit: Emit) -> tuple[Path, int]:
    """The data root and the number of gallery distractors, checked against it before anything is written
    (the demo faces hold none: refused before they are generated)."""
    from engine.data.resolve import job_data_root

    count, origin = distractors.requested(request.preset, request.options.distractors)
    if count and not (request.data or request.preset.data.root):
        distractors.check(None, count, origin)
    data_root = job_data_root(request.preset, request.data, emit, JOB)
    distractors.check(data_root, count, origin)
    return data_root, count


def _enrol_gallery(recognisers: dict[str, "_Recogniser"], hr: torch.Tensor, labels: torch.Tensor,
                   runtime: Runtime) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{role: (subject labels, templates)}: the same gallery images enrolled by each recogniser."""
    from engine.data import to_float

    templates = {}
    for role, recogniser in recognisers.items():
        embeddings = torch.cat([recogniser.embed(to_float(chunk.to(runtime.device))).cpu()
                                for chunk in hr.split(EVAL_BATCH)])
        check_not_degenerate(embeddings, recogniser.path)
        templates[role] = enrol(embeddings, labels)
    return templates


def _score_rows(plan: dict, recognisers: dict, templates: dict, split, protocol_split, dsr_model, dsr_file,
                threshold: float, runtime: Runtime, emit: Emit, stop: StopFlag
                ) -> tuple[dict[str, dict | None], dict[str, dict[str, Any]]]:
    """(results per row, {row: sim, ranks, genuine}): every probe kind embedded once, each row scored."""
    gallery_labels = next(iter(templates.values()))[0]
    probe_labels = split.labels[protocol_split.probe_index]
    results: dict[str, dict | None] = {"dsr": None}
    scored: dict[str, dict[str, Any]] = {}
    kinds = [kind for kind in PROBE_KINDS if any(k == kind for k, _ in plan.values())]
    for number, kind in enumerate(kinds, start=1):
        roles = {role: recognisers[role] for k, role in plan.values() if k == kind}
        emit(Log(JOB, f"evaluating {kind} probes ({len(probe_labels)} images) with {', '.join(roles)}"))
        embedded, mean_psnr, mean_ssim = _embed_probes(
            kind, _probe_maker(kind, dsr_model, dsr_file, split.hr_size), split, protocol_split.probe_index,
            roles, runtime, emit, stop, number, len(kinds))
        for name, (k, role) in plan.items():
            if k != kind:
                continue
            sim = metrics.cosine_similarity_matrix(embedded[role], templates[role][1])
            results[name] = {**recognition_metrics(sim, probe_labels, gallery_labels, threshold),
                             "psnr": mean_psnr, "ssim": mean_ssim}
            scored[name] = {"sim": sim, "ranks": metrics.probe_ranks(sim, probe_labels, gallery_labels),
                            "genuine": probe_labels[:, None] == gallery_labels[None, :]}
    return results, scored


def _distractor_record(chosen: "distractors.Distractors", gallery_labels: torch.Tensor, test_gallery_images: int
                       ) -> dict[str, Any]:
    """eval.json's protocol entries on the gallery's size and its distractors (the same for every row)."""
    return {"distractors": len(chosen), "gallery_subjects": len(gallery_labels),
            "gallery_images": test_gallery_images + len(chosen),
            "distractor_source": (f"{DISTRACTORS}_processed: faces held out of the unlabelled folder at prepare "
                                  "time (never trained on), the first N after a shuffle seeded by runtime.seed"
                                  if len(chosen) else None),
            "distractor_files": list(chosen.names)}


def _load_recognisers(plan: dict, files: dict, runtime, emit: Emit) -> dict[str, "_Recogniser"]:
    """Each role's recogniser (a file named by several roles is loaded once)."""
    by_file: dict[Path, _Recogniser] = {}
    recognisers: dict[str, _Recogniser] = {}
    for role in dict.fromkeys(role for _kind, role in plan.values()):
        path, source = files[role]
        if path not in by_file:
            by_file[path] = _Recogniser(path, runtime)
        recognisers[role] = by_file[path]
        emit(Log(JOB, f"recogniser ({role}): {path} ({source})"))
    return recognisers


def _protocol_record(preset, data_root, split, protocol_split, plan: dict, files: dict, recognisers: dict,
                     dsr_file, dsr_source, *, subjects: int, probes: int) -> dict[str, Any]:
    """eval.json's ``protocol``: what was measured, on which images, with which files."""
    main = main_role(files)
    return {
        "split": "test", "data_root": str(data_root), "subjects": subjects,
        "gallery_images": len(protocol_split.gallery_index), "gallery_per_subject": preset.eval.gallery_per_subject,
        "probes": probes, "threshold": preset.eval.threshold, "seed": preset.runtime.seed,
        "vlr_size": list(split.vlr_size), "hr_size": split.hr_size,
        "recogniser": str(files[main][0]), "recogniser_source": files[main][1],
        "recogniser_variant": recognisers[main].variant if main in recognisers else None,
        "recognisers": {role: {"file": str(path), "source": source,
                               "variant": recognisers[role].variant if role in recognisers else None}
                        for role, (path, source) in files.items()},
        "rows": {name: {"probes": kind, "recogniser": role, "recogniser_file": str(files[role][0])}
                 for name, (kind, role) in plan.items()},
        "dsr": None if dsr_file is None else str(dsr_file), "dsr_source": dsr_source,
        "ties": "pessimistic: a wrong subject scoring as high as the right one ranks ahead of it",
        "notes": "hr probes are the HR images themselves: their PSNR is infinite and written as null",
    }
