"""The preset schema: every hyperparameter of the guide, typed, described and range-checked.

Each field is a dataclass field whose metadata holds a one-line ``help`` and its valid range
(``min``/``max``, inclusive unless ``min_exclusive``/``max_exclusive``) or ``choices``. The
defaults are the guide's 32x32 values, so a user preset may leave out any key.

Pairs such as ``brightness = [0.93, 1.07]`` are ``tuple[float, float]`` ranges (low <= high).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator


def spec(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         min_exclusive: bool = False, max_exclusive: bool = False,
         choices: tuple[str, ...] | None = None, pattern: tuple[str, str] | None = None,
         whole: bool = False) -> Any:
    """A dataclass field carrying the description and valid range the CLI and the app show.

    ``pattern`` = (regular expression the whole text must match, the valid values in words);
    ``whole``: a range whose two ends are whole numbers.
    """
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive,
            "max_exclusive": max_exclusive, "choices": choices, "pattern": pattern, "whole": whole}
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


SEED_MAX = 2**32 - 1  # what every seeded generator (torch, numpy, random) accepts
PROB = {"min": 0.0, "max": 1.0}
POS = {"min": 0.0, "min_exclusive": True}
NONNEG = {"min": 0.0}
# The devices the runtime knows (engine.runtime.resolve): auto picks cuda when available, else cpu.
DEVICE_PATTERN = (r"auto|cpu|cuda(:[0-9]+)?", "auto, cpu, cuda or cuda:N (N = the GPU index, 0 first)")


@dataclass(frozen=True)
class DataConfig:
    root: str = spec("", "dataset root holding {train,val,test}_processed/{hr_images,vlr_images}; "
                         "empty = built-in demo faces")
    vlr_width: int = spec(32, "VLR image width in pixels (the older layout is 14 wide)", min=4, max=128)
    vlr_height: int = spec(32, "VLR image height in pixels (the older layout is 16 tall)", min=4, max=128)
    hr_size: int = spec(128, "HR image side in pixels (square)", min=32, max=512)
    cache_on_device: bool = spec(True, "keep the decoded uint8 dataset on the training device")
    demo_identities: int = spec(60, "demo data: number of identities generated", min=4, max=10000)
    demo_per_identity: int = spec(12, "demo data: images per identity", min=3, max=1000)
    demo_seed: int = spec(0, "demo data: generator seed", min=0, max=SEED_MAX)


@dataclass(frozen=True)
class DSRConfig:
    batch_size: int = spec(14, "DSR training batch size (lower it on OOM: 12)", min=1, max=4096)
    learning_rate: float = spec(1.3e-4, "AdamW peak learning rate", **POS, max=1.0)
    epochs: int = spec(100, "training epochs", min=1, max=100000)
    warmup_epochs: int = spec(5, "linear warm-up epochs before the cosine decay", min=0, max=10000)
    grad_clip: float = spec(1.0, "gradient-norm clip (0 = off)", **NONNEG, max=1000.0)
    weight_decay: float = spec(1e-5, "AdamW weight decay of the DSR network", **NONNEG, max=1.0)
    ema_decay: float = spec(0.999, "EMA decay of the weights used for validation and saving (0 = off)",
                            min=0.0, max=1.0, max_exclusive=True)
    early_stop_patience: int = spec(20, "epochs without a better val PSNR before stopping (0 = off)",
                                    min=0, max=100000)
    lambda_l1: float = spec(1.0, "weight of the L1 pixel loss", **NONNEG, max=1000.0)
    lambda_perceptual: float = spec(0.025, "weight of the perceptual loss", **NONNEG, max=1000.0)
    lambda_identity: float = spec(0.60, "weight of the identity loss 1 - cos(EdgeFace(SR), EdgeFace(HR))",
                                  **NONNEG, max=1000.0)
    lambda_feature_match: float = spec(0.18, "weight of the EdgeFace intermediate feature-matching loss",
                                       **NONNEG, max=1000.0)
    lambda_tv: float = spec(2e-6, "weight of the total-variation loss", **NONNEG, max=1000.0)
    perceptual_network: str = spec("vgg19", "network behind the perceptual loss",
                                   choices=("vgg19", "edgeface"))
    vgg19_weights: str = spec("", "path of torchvision's vgg19 weights file; empty = torchvision's cache "
                                  "($TORCH_HOME/hub/checkpoints/vgg19-dcbbb69f.pth)")
    init_weights: str = spec("", "warm start: a DSR checkpoint (best.pt or last.pt of an earlier train-dsr run "
                                 "of the same sizes) whose weights start training; optimiser, schedule and EMA "
                                 "start fresh; empty = random initialisation")
    unlabelled: bool = spec(True, "also train DSR on the dataset's unlabelled faces (prepare --unlabelled DIR), when "
                                  "it has them; false = the train split's labelled faces only")
    base_channels: int = spec(128, "feature channels of the DSR network", min=4, max=1024)
    residual_blocks: int = spec(16, "residual blocks of the DSR network", min=1, max=256)
    rotation_p: float = spec(0.65, "probability of a random rotation of a training pair", **PROB)
    rotation_degrees: float = spec(6.0, "maximum rotation angle in degrees (uniform in +-)", min=0.0, max=180.0)
    color_jitter_p: float = spec(0.3, "probability of colour jitter of a training pair", **PROB)
    brightness: tuple[float, float] = spec((0.93, 1.07), "brightness factor range [low, high]", min=0.0, max=10.0)
    contrast: tuple[float, float] = spec((0.93, 1.07), "contrast factor range [low, high]", min=0.0, max=10.0)
    saturation: tuple[float, float] = spec((0.96, 1.04), "saturation factor range [low, high]", min=0.0, max=10.0)


@dataclass(frozen=True)
class FinetuneConfig:
    stage1_epochs: int = spec(5, "stage 1 epochs: ArcFace head only, backbone frozen", min=0, max=100000)
    stage2_epochs: int = spec(25, "stage 2 epochs: whole model", min=0, max=100000)
    batch_size: int = spec(28, "fine-tuning batch size (lower it on OOM: 24)", min=1, max=4096)
    head_lr: float = spec(9e-4, "stage 1 learning rate of the ArcFace head", **POS, max=1.0)
    backbone_lr: float = spec(6e-6, "stage 2 learning rate of the EdgeFace backbone", **POS, max=1.0)
    head_lr_stage2: float = spec(6e-5, "stage 2 learning rate of the ArcFace head", **POS, max=1.0)
    arcface_scale: float = spec(32.0, "ArcFace logit scale s", **POS, max=256.0)
    arcface_margin: float = spec(0.45, "ArcFace additive angular margin m (radians)", min=0.0, max=1.5)
    weight_decay: float = spec(3e-5, "AdamW weight decay", **NONNEG, max=1.0)
    head: str = spec("arcface", "margin head: arcface (additive angular margin) or adaface (the margin adapts to "
                                "image quality through the embedding norm)", choices=("arcface", "adaface"))
    lambda_distill: float = spec(0.0, "weight of the HR-teacher distillation loss 1 - cos(student(input), "
                                      "frozen base recogniser(HR)) beside the margin loss (0 = off)",
                                 **NONNEG, max=1000.0)
    label_smoothing: float = spec(0.08, "label smoothing of the ArcFace cross-entropy", min=0.0, max=1.0,
                                  max_exclusive=True)
    early_stop_patience: int = spec(10, "stage 2 epochs without a better val top-1 before stopping (0 = off)",
                                    min=0, max=100000)
    flip_p: float = spec(0.5, "horizontal flip probability", **PROB)
    jitter_brightness: float = spec(0.07, "ColorJitter brightness", min=0.0, max=1.0)
    jitter_contrast: float = spec(0.07, "ColorJitter contrast", min=0.0, max=1.0)
    jitter_saturation: float = spec(0.05, "ColorJitter saturation", min=0.0, max=1.0)
    jitter_hue: float = spec(0.02, "ColorJitter hue", min=0.0, max=0.5)
    rotation_degrees: float = spec(5.0, "RandomRotation degrees (0 = off)", min=0.0, max=180.0)
    pretrain_epochs: int = spec(0, "epochs of HR pre-training of the recogniser when no weights are given "
                                   "(the demo path; 0 = require weights)", min=0, max=100000)
    pretrain_lr: float = spec(2e-3, "learning rate of HR pre-training", **POS, max=1.0)


RESIZE_PATTERN = (r"(bicubic|bilinear|area)(, ?(bicubic|bilinear|area))*",
                  "one or more of bicubic, bilinear, area, separated by commas (one drawn per image)")


@dataclass(frozen=True)
class DegradeConfig:
    """Camera-like degradation of the training VLR images, drawn afresh from HR for every image in every step
    (engine/data/camera): DSR's training pairs and the recognisers' fine-tuning inputs, bicubic rows alike."""
    enabled: bool = spec(False, "degrade the training VLR images on the fly from HR (off: the dataset's VLR images)")
    blur_p: float = spec(0.9, "probability of a Gaussian blur (optics, focus)", **PROB)
    blur_sigma: tuple[float, float] = spec((0.2, 1.5), "Gaussian blur sigma range in VLR pixels", min=0.0, max=10.0)
    blur_anisotropic_p: float = spec(0.5, "share of blurs that are anisotropic (two sigmas, any angle)", **PROB)
    motion_p: float = spec(0.2, "probability of a motion blur", **PROB)
    motion_length: tuple[float, float] = spec((0.5, 2.5), "motion blur length range in VLR pixels (any angle)",
                                              min=0.0, max=16.0)
    resize: str = spec("bicubic, bilinear, area", "downsampling methods to VLR, one drawn per image",
                       pattern=RESIZE_PATTERN)
    noise_p: float = spec(0.7, "probability of Gaussian sensor noise", **PROB)
    noise_sigma: tuple[float, float] = spec((1.0, 8.0), "Gaussian noise sigma range in 8-bit grey levels",
                                            min=0.0, max=100.0)
    noise_gray_p: float = spec(0.3, "share of noisy images whose noise is the same in R, G and B", **PROB)
    poisson_p: float = spec(0.3, "probability of Poisson (shot) noise", **PROB)
    poisson_scale: tuple[float, float] = spec((0.2, 1.5), "Poisson noise scale range (Real-ESRGAN's: 1 = photon "
                                                          "noise of 8-bit levels)", min=0.0, max=10.0)
    jpeg_p: float = spec(0.8, "probability of JPEG compression", **PROB)
    jpeg_quality: tuple[float, float] = spec((40, 90), "JPEG quality range (whole numbers)", min=1, max=100,
                                             whole=True)
    second_pass_p: float = spec(0.0, "share of images degraded twice, blur/noise/JPEG on the 2x VLR grid first "
                                     "(Real-ESRGAN's second order)", **PROB)


@dataclass(frozen=True)
class EvalConfig:
    threshold: float = spec(0.35, "cosine rejection threshold of open-set identification", min=-1.0, max=1.0)
    gallery_per_subject: int = spec(1, "HR gallery images per test subject (their mean embedding)", min=1, max=1000)
    distractors: int = spec(0, "extra gallery identities with no probe, from the dataset's distractors (prepare "
                               "--unlabelled DIR --distractors N; never trained on); 0 = none", min=0, max=10_000_000)
    probe_degrade: str = spec("", "unseen camera: degrade the test probes from HR with this camera spec (e.g. "
                                  "\"motion=1:3,resize=bilinear,poisson=0.5:1.5,jpeg=25:50\"; seeded per image; the "
                                  "gallery stays HR); empty = the dataset's VLR probes")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = spec("auto", "torch device the jobs run on (auto: cuda when available, else cpu)",
                       pattern=DEVICE_PATTERN)
    amp: str = spec("auto", "mixed precision: auto/fp16/bf16 on CUDA; only bf16 also on the CPU",
                    choices=("auto", "bf16", "fp16", "off"))
    seed: int = spec(42, "random seed", min=0, max=SEED_MAX)
    edgeface_variant: str = spec("edgeface_xs_gamma_06", "EdgeFace variant",
                                 choices=("edgeface_xxs", "edgeface_xs", "edgeface_xs_gamma_06",
                                          "edgeface_s_gamma_05", "edgeface_base"))
    edgeface_weights: str = spec("", "EdgeFace weights (state dict, int8 _q state dict or checkpoint); "
                                     "empty = pre-train on HR (finetune.pretrain_epochs)")
    runs_dir: str = spec("runs", "directory that receives run directories")
    tensorboard: bool = spec(False, "also write every metric and sample strip as TensorBoard events in "
                                    "RUN_DIR/tensorboard (tensorboard --logdir runs)")
    num_threads: int = spec(0, "CPU threads for torch (0 = torch's default)", min=0, max=1024)
    channels_last: bool = spec(False, "channels_last memory format for the networks (faster convolutions on "
                                      "CUDA; measure with benchmarks/bench_train.py on the CPU)")
    compile: bool = spec(False, "torch.compile the DSR network and the frozen recogniser (falls back to eager "
                                "with a logged reason when it cannot compile)")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "dsr": DSRConfig,
    "finetune": FinetuneConfig,
    "degrade": DegradeConfig,
    "eval": EvalConfig,
    "runtime": RuntimeConfig,
}


@dataclass(frozen=True)
class FieldInfo:
    section: str
    name: str
    type: str  # "int", "float", "bool", "str" or "range"
    default: Any
    help: str
    min: float | None
    max: float | None
    min_exclusive: bool
    max_exclusive: bool
    choices: tuple[str, ...] | None
    pattern: tuple[str, str] | None = None   # (regular expression, the valid values in words)
    whole: bool = False                      # a range of whole numbers

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    def range_text(self) -> str:
        """The valid values in words, e.g. ``(0, 1]`` or ``one of: bf16, fp16``."""
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.pattern:
            return self.pattern[1]
        if self.type == "bool":
            return "true or false"
        if self.type == "str":
            return "any text"
        lo = "-inf" if self.min is None else _fmt(self.min)
        hi = "inf" if self.max is None else _fmt(self.max)
        left = "(" if self.min_exclusive or self.min is None else "["
        right = ")" if self.max_exclusive or self.max is None else "]"
        body = f"{left}{lo}, {hi}{right}"
        if self.type == "range":
            return f"two {'whole numbers' if self.whole else 'numbers'} [low, high] within {body}"
        return body


def _fmt(value: float) -> str:
    """0 -> "0", 1000.0 -> "1000", 4294967295 -> "4294967295", 1e-5 -> "1e-05"."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    if "tuple" in text:
        return "range"
    for py_type, name in _TYPE_NAMES.items():
        if annotation is py_type or text == py_type.__name__:
            return name
    raise TypeError(f"unsupported preset field type {annotation!r}")


def iter_fields() -> Iterator[FieldInfo]:
    """Every preset field in file order, with its description and valid range."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            m = f.metadata
            yield FieldInfo(section, f.name, _type_name(f.type), f.default, m["help"], m["min"], m["max"],
                            m["min_exclusive"], m["max_exclusive"], m["choices"], m.get("pattern"),
                            m.get("whole", False))


FIELDS: dict[str, FieldInfo] = {info.key: info for info in iter_fields()}
