"""EdgeFace face recogniser, built with timm exactly as its authors build it, and its weight files.

Facts (George et al., "EdgeFace", IEEE T-BIOM 2024; the authors' ``backbones/__init__.py``):
each variant is ``timm.create_model(EDGENEXT_NAME)`` wrapped as the child ``model`` of a module,
with ``model.reset_classifier(512)``; the ``gamma`` variants then replace every ``nn.Linear``
(the head's ``fc`` included: only a Linear *named* ``head`` would be skipped, and there is none)
by a low-rank pair ``linear1`` (in -> r, no bias), ``linear2`` (r -> out), with
``r = max(2, int(min(in, out) * gamma))``. Input: 112x112 RGB in [-1, 1]; output: 512-d.

Weight files understood by :func:`load_edgeface`: the authors' float state dicts, their int8
``_q`` state dicts (dynamic quantisation of every Linear; dequantised here into the float model so
it can be trained), and this project's checkpoints (``{"kind": "edgeface", ...}``). TorchScript
files run for inference only through :func:`load_recogniser`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from engine.io import checkpoints as checkpoint_io
from engine.errors import WeightsError
from engine.models.resize import Resize

EMBEDDING_DIM = 512
INPUT_SIZE = 112
OBTAIN_WEIGHTS = ("Get the authors' weights from the EdgeFace release (github.com/otroshi/edgeface, or "
                  "huggingface.co/Idiap: edgeface_xs_gamma_06.pt, edgeface_s_gamma_05.pt, edgeface_xxs.pt, ...), "
                  "or leave runtime.edgeface_weights empty and set finetune.pretrain_epochs > 0 to pre-train one "
                  "on your HR images (`vlr-workbench pretrain --preset P`).")
TORCHSCRIPT_LIMIT = ("TorchScript files run for inference only: feature matching (DSR training) and fine-tuning "
                     "need the intermediate features and trainable weights of a state dict. Use the authors' state "
                     "dict file of the same variant (edgeface_*.pt from their release, loadable with torch.load) or "
                     "a checkpoint written by this workbench.")


@dataclass(frozen=True)
class VariantSpec:
    timm_name: str
    gamma: float | None  # low-rank ratio of the Linear replacement; None = plain Linear layers


VARIANTS: dict[str, VariantSpec] = {
    "edgeface_xxs": VariantSpec("edgenext_xx_small", None),
    "edgeface_xs": VariantSpec("edgenext_x_small", None),      # float model of the authors' edgeface_xs_q
    "edgeface_xs_gamma_06": VariantSpec("edgenext_x_small", 0.6),
    "edgeface_s_gamma_05": VariantSpec("edgenext_small", 0.5),
    "edgeface_base": VariantSpec("edgenext_base", None),
}

# stem channels (model.stem.0.weight rows) -> timm backbone, to recognise a file's variant
_STEM_CHANNELS = {24: "edgenext_xx_small", 32: "edgenext_x_small", 48: "edgenext_small", 80: "edgenext_base"}


class LowRankLinear(nn.Module):
    """The authors' ``LoRaLin``: a Linear factored as in -> rank (no bias) -> out."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


def replace_linear_with_lowrank(module: nn.Module, gamma: float) -> nn.Module:
    """Replace every ``nn.Linear`` below ``module`` with :class:`LowRankLinear` (the authors' rule)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and "head" not in name:
            rank = max(2, int(min(child.in_features, child.out_features) * gamma))
            setattr(module, name, LowRankLinear(child.in_features, child.out_features, rank, child.bias is not None))
        else:
            replace_linear_with_lowrank(child, gamma)
    return module


class EdgeFace(nn.Module):
    """An EdgeFace variant; state-dict keys match the authors' files (``model.stem.0.weight``, ...)."""

    def __init__(self, variant: str):
        super().__init__()
        if variant not in VARIANTS:
            raise WeightsError(f"unknown EdgeFace variant {variant!r}. Variants: {', '.join(VARIANTS)} "
                               "(runtime.edgeface_variant).")
        spec = VARIANTS[variant]
        self.variant = variant
        self.model = timm.create_model(spec.timm_name, pretrained=False)
        self.model.reset_classifier(EMBEDDING_DIM)
        if spec.gamma is not None:
            replace_linear_with_lowrank(self, spec.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,112,112] in [-1, 1] -> [B,512] embedding (not normalised)."""
        return self.model(x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(embedding, the four stage outputs [B,C_i,H_i,W_i]) from one pass; the embedding equals ``forward``."""
        final, stages = self.model.forward_intermediates(x)
        return self.model.forward_head(final), stages

    @property
    def stage_channels(self) -> list[int]:
        return [info["num_chs"] for info in self.model.feature_info]


def build_edgeface(variant: str) -> EdgeFace:
    """A randomly initialised EdgeFace variant (no download: timm's ``pretrained=False``)."""
    return EdgeFace(variant)


TO_INPUT_SIZE = Resize((INPUT_SIZE, INPUT_SIZE), "bilinear", antialias=True)


def resize_for_recogniser(img01: torch.Tensor, resize: nn.Module = TO_INPUT_SIZE) -> torch.Tensor:
    """Any [0, 1] NCHW RGB batch -> float 112x112 (bilinear, antialiased), still in [0, 1]; ``resize``:
    :data:`TO_INPUT_SIZE` or its matrices for one input size (deployment)."""
    if img01.dim() != 4 or img01.shape[1] != 3:
        raise ValueError(f"EdgeFace expects an RGB batch [B,3,H,W], got shape {tuple(img01.shape)}")
    return resize(img01.float())


def prepare_input(img01: torch.Tensor, resize: nn.Module = TO_INPUT_SIZE) -> torch.Tensor:
    """Any [0, 1] NCHW batch -> 112x112 (bilinear, antialiased) normalised to [-1, 1] (mean 0.5, std 0.5)."""
    return (resize_for_recogniser(img01, resize) - 0.5) / 0.5


def embed(model: nn.Module, img01: torch.Tensor) -> torch.Tensor:
    """L2-normalised embeddings of a [0, 1] batch (any size), ready for cosine similarity."""
    return F.normalize(model(prepare_input(img01)).float(), dim=-1)


def count_all_parameters(model: nn.Module) -> int:
    """Every parameter, trainable or frozen (a recogniser's size)."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- weight files


def is_torchscript(path: Path) -> bool:
    """True for a ``torch.jit.save`` archive (a zip holding ``constants.pkl`` / ``code/``)."""
    return checkpoint_io.is_torchscript(path)


def dequantize_state_dict(sd: dict[str, Any]) -> dict[str, Any]:
    """An int8 dynamic-quantisation state dict -> the float model's (``<p>.weight`` / ``<p>.bias``).

    Each quantised Linear ``<p>`` holds ``<p>._packed_params._packed_params = (qint8 weight, bias)``
    and bookkeeping entries (``scale``, ``zero_point``, ``_packed_params.dtype``) that have no
    float counterpart; those are dropped for that prefix only.
    """
    suffix = "._packed_params._packed_params"
    prefixes = {k[: -len(suffix)] for k in sd if k.endswith(suffix)}
    drop = {f"{p}.{s}" for p in prefixes for s in ("scale", "zero_point", "_packed_params.dtype")}
    out: dict[str, Any] = {}
    for key, value in sd.items():
        if key in drop:
            continue
        if key.endswith(suffix):
            prefix = key[: -len(suffix)]
            weight, bias = value[0], value[1]
            out[f"{prefix}.weight"] = weight.dequantize() if weight.is_quantized else weight.float()
            if bias is not None:
                out[f"{prefix}.bias"] = bias.detach().float()
        else:
            out[key] = value
    return out


def is_quantized_state_dict(sd: dict[str, Any]) -> bool:
    return any(k.endswith("._packed_params._packed_params") for k in sd)


def infer_variant(sd: dict[str, Any]) -> str:
    """The variant whose architecture a (float or int8) state dict of the authors' layout fits."""
    stem = sd.get("model.stem.0.weight")
    if not isinstance(stem, torch.Tensor):
        sample = ", ".join(list(sd)[:4]) or "none"
        raise WeightsError(f"this state dict has no 'model.stem.0.weight' entry (first keys: {sample}), so it is "
                           f"not an EdgeFace state dict of the authors' layout. {OBTAIN_WEIGHTS}")
    timm_name = _STEM_CHANNELS.get(int(stem.shape[0]))
    low_rank = any(".linear1.weight" in k for k in sd)
    for name, spec in VARIANTS.items():
        if spec.timm_name == timm_name and (spec.gamma is not None) == low_rank:
            return name
    kind = "low-rank" if low_rank else "plain-Linear"
    raise WeightsError(f"this state dict has a {stem.shape[0]}-channel stem and {kind} layers, which fits no known "
                       f"EdgeFace variant ({', '.join(VARIANTS)}). {OBTAIN_WEIGHTS}")


# What torch says on every load of the authors' int8 _q files (their storages and qint8 tensors are rebuilt
# through APIs it deprecates); the file is fine and nothing can be done about it here, so those two are
# silenced around the load, and every other warning stays.
QUANTIZED_LOAD_WARNINGS = (r"TypedStorage is deprecated", r"torch\.quantize_per_tensor.* deprecated")


def _read(path: Path, map_location: Any) -> Any:
    # Weights-only: the authors' float and int8 _q state dicts load without running code from the file.
    try:
        with warnings.catch_warnings():
            for message in QUANTIZED_LOAD_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            return checkpoint_io.load_checkpoint(path, what="EdgeFace weights", map_location=map_location)
    except WeightsError as exc:
        raise WeightsError(f"{exc} {OBTAIN_WEIGHTS}") from None


def _check_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        raise WeightsError(f"EdgeFace weights {path} is a directory, not a weights file. Give the .pt file inside "
                           "it (runtime.edgeface_weights or --edgeface).")
    if not path.is_file():
        raise WeightsError(f"EdgeFace weights {path} not found. {OBTAIN_WEIGHTS} Then set "
                           "runtime.edgeface_weights (or pass --edgeface) to the file's path.")
    return path


def _float_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], str | None]:
    """(float state dict, variant recorded in the file or None) of an authors' file or project checkpoint."""
    if isinstance(obj, dict) and "kind" in obj:
        if obj["kind"] != "edgeface" or "state_dict" not in obj:
            raise WeightsError(f"{path} is a '{obj['kind']}' checkpoint, not an EdgeFace one. Give an EdgeFace "
                               f"weights file (runtime.edgeface_weights / --edgeface). {OBTAIN_WEIGHTS}")
        return dict(obj["state_dict"]), obj.get("variant")
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict. {OBTAIN_WEIGHTS}")
    sd = dict(obj)
    if is_quantized_state_dict(sd):
        sd = dequantize_state_dict(sd)
    return sd, None


def _list(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(model: EdgeFace, sd: dict[str, Any], path: Path | str) -> None:
    """Strict load that reports every missing, unexpected or mis-shaped key in a WeightsError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in sd and isinstance(sd[k], torch.Tensor) and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_list(unexpected)}")
        if shapes:
            parts.append(f"wrong shapes (file vs model): {_list(shapes, 6)}")
        raise WeightsError(f"{path} does not fit EdgeFace variant {model.variant}: {'; '.join(parts)}. Check "
                           f"runtime.edgeface_variant against the file (its name says the variant) or use an "
                           f"unmodified file. {OBTAIN_WEIGHTS}")
    model.load_state_dict(sd)


def load_edgeface(path: str | Path, variant: str | None = None, map_location: Any = "cpu") -> EdgeFace:
    """A float, trainable EdgeFace from an authors' float or int8 state dict or a project checkpoint.

    ``variant`` None = the one the file fits; a given variant that the file does not fit is an error.
    """
    path = _check_path(path)
    if is_torchscript(path):
        raise WeightsError(f"{path} is a TorchScript file. {TORCHSCRIPT_LIMIT}")
    sd, recorded = _float_state_dict(_read(path, map_location), path)
    found = recorded or infer_variant(sd)
    if variant is not None and variant != found:
        raise WeightsError(f"{path} holds EdgeFace variant {found}, but {variant} was asked for (preset key "
                           f"runtime.edgeface_variant). Set runtime.edgeface_variant = \"{found}\" or give a "
                           f"{variant} weights file.")
    model = EdgeFace(found)
    load_state_dict_checked(model, sd, path)
    return model


class ScriptedEdgeFace(nn.Module):
    """A TorchScript recogniser: embeddings only (no stage features, not for training)."""

    def __init__(self, module: torch.jit.ScriptModule, path: Path):
        super().__init__()
        self.module, self.path, self.variant = module, path, "torchscript"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise WeightsError(f"{self.path} is a TorchScript file and gives no intermediate features. "
                           f"{TORCHSCRIPT_LIMIT}")


def load_recogniser(path: str | Path, variant: str | None = None,
                    map_location: Any = "cpu") -> EdgeFace | ScriptedEdgeFace:
    """For inference: :func:`load_edgeface`, or a TorchScript file wrapped in :class:`ScriptedEdgeFace`."""
    path = _check_path(path)
    if is_torchscript(path):
        try:
            module = checkpoint_io.load_torchscript(path, what="EdgeFace TorchScript file", map_location=map_location)
        except WeightsError as exc:
            raise WeightsError(f"{exc} {OBTAIN_WEIGHTS}") from None
        return ScriptedEdgeFace(module, path).eval()
    return load_edgeface(path, variant, map_location)


def edgeface_checkpoint(model: EdgeFace, *, head: nn.Module | None = None, classes: list[str] | None = None,
                        **extra: Any) -> dict[str, Any]:
    """The project's checkpoint dict for an EdgeFace (and optionally its ArcFace head and class names)."""
    return {"kind": "edgeface", "variant": model.variant, "config": {"variant": model.variant},
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "head": None if head is None else {k: v.detach().cpu() for k, v in head.state_dict().items()},
            "classes": list(classes or []), **extra}
