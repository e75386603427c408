"""A camera model: the ranges and probabilities of each degradation step, from a preset or a text spec.

One value, :class:`Camera`, describes a camera for every use: the preset's ``[degrade]`` section
(training draws afresh for every image in every step), ``prepare --degrade SPEC`` (a dataset whose
VLR images all come from one camera) and ``evaluate --probe-degrade SPEC`` (test probes from a
camera the training never saw). The text form is a comma-separated list of steps, each present
step applied with probability 1 unless ``@P`` follows it::

    blur=LO:HI[@P]       Gaussian blur, sigma in VLR pixels
    aniso=P              the share of blurred images whose blur is anisotropic (two sigmas, any angle)
    motion=LO:HI[@P]     motion blur, length in VLR pixels, any angle
    resize=M[|M...]      the downsampling method, one drawn per image: bicubic, bilinear, area
    noise=LO:HI[@P]      Gaussian sensor noise, sigma in 8-bit grey levels
    gray=P               the share of noisy images whose noise is the same in the three channels
    poisson=LO:HI[@P]    Poisson (shot) noise, Real-ESRGAN's scale (1: the photon noise of 8-bit levels)
    jpeg=LO:HI[@P]       JPEG quality, whole numbers 1..100
    second=P             the share of images that go through the chain twice (Real-ESRGAN's second order)

``"default"`` is :data:`DEFAULT_SPEC` (the README's default camera); ``"off"`` or ``""`` is no camera.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

RESIZE_METHODS = ("bicubic", "bilinear", "area")
DEFAULT_SPEC = "blur=0.3:1.5,noise=0:6,jpeg=40:90"
RANGE_STEPS = {"blur": ("blur_p", "blur_sigma", 0.0, 10.0), "motion": ("motion_p", "motion_length", 0.0, 16.0),
               "noise": ("noise_p", "noise_sigma", 0.0, 100.0), "poisson": ("poisson_p", "poisson_scale", 0.0, 10.0),
               "jpeg": ("jpeg_p", "jpeg_quality", 1.0, 100.0)}
SHARE_STEPS = {"aniso": "blur_anisotropic_p", "gray": "noise_gray_p", "second": "second_pass_p"}
SPEC_HELP = ("a comma-separated list of blur=LO:HI, aniso=P, motion=LO:HI, resize=bicubic|bilinear|area, "
             "noise=LO:HI, gray=P, poisson=LO:HI, jpeg=LO:HI (whole qualities), second=P; a range may end in @P "
             f"(its probability); e.g. {DEFAULT_SPEC}, or \"default\"")


@dataclass(frozen=True)
class Camera:
    """Every step's probability and range; a step with probability 0 is off."""
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    blur_anisotropic_p: float = 0.0
    motion_p: float = 0.0
    motion_length: tuple[float, float] = (0.0, 0.0)
    resize: tuple[str, ...] = ("bicubic",)
    noise_p: float = 0.0
    noise_sigma: tuple[float, float] = (0.0, 0.0)
    noise_gray_p: float = 0.0
    poisson_p: float = 0.0
    poisson_scale: tuple[float, float] = (0.0, 0.0)
    jpeg_p: float = 0.0
    jpeg_quality: tuple[float, float] = (90.0, 90.0)
    second_pass_p: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def to_spec(self) -> str:
        """The canonical text form, steps in the order of the module docstring (steps that are off left out):
        what protocols and manifests record."""
        parts = []
        for key in ("blur", "aniso", "motion", "resize", "noise", "gray", "poisson", "jpeg", "second"):
            if key in RANGE_STEPS:
                p_name, range_name, _lo, _hi = RANGE_STEPS[key]
                p = getattr(self, p_name)
                if p > 0:
                    lo, hi = getattr(self, range_name)
                    parts.append(f"{key}={_num(lo)}:{_num(hi)}" + (f"@{_num(p)}" if p < 1 else ""))
            elif key == "resize":
                if self.resize != ("bicubic",):
                    parts.append("resize=" + "|".join(self.resize))
            else:
                share = getattr(self, SHARE_STEPS[key])
                owner = {"aniso": self.blur_p, "gray": max(self.noise_p, self.poisson_p), "second": 1.0}[key]
                if share > 0 and owner > 0:
                    parts.append(f"{key}={_num(share)}")
        return ",".join(parts) or "off"

    @property
    def is_off(self) -> bool:
        return self.to_spec() == "off"


def spec_text(camera: Camera | None) -> str | None:
    """A camera's canonical spec, None for no camera (what checkpoints, summaries and protocols record)."""
    return None if camera is None else camera.to_spec()


def _num(value: float) -> str:
    return f"{float(value):g}"


def parse_spec(text: str) -> Camera | None:
    """The camera of a text spec (module docstring), None for ``off``; ``ValueError`` naming the bad item."""
    text = (text or "").strip()
    if text == "default":
        text = DEFAULT_SPEC
    if text in ("", "off", "none"):
        return None
    values: dict[str, Any] = {}
    seen: set[str] = set()
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key in seen or key not in (*RANGE_STEPS, *SHARE_STEPS, "resize"):
            raise ValueError(f"{item.strip()!r}: expected one of blur, aniso, motion, resize, noise, gray, poisson, "
                             f"jpeg, second, each at most once as KEY=VALUE ({SPEC_HELP})")
        seen.add(key)
        if key == "resize":
            methods = tuple(value.split("|"))
            if not methods or any(m not in RESIZE_METHODS for m in methods) or len(set(methods)) != len(methods):
                raise ValueError(f"resize={value}: expected methods among {', '.join(RESIZE_METHODS)} joined by |")
            values["resize"] = methods
        elif key in SHARE_STEPS:
            values[SHARE_STEPS[key]] = _probability(key, value)
        else:
            p_name, range_name, low, high = RANGE_STEPS[key]
            span, _, p_text = value.partition("@")
            values[p_name] = _probability(key, p_text) if p_text else 1.0
            values[range_name] = _range(key, span, low, high, whole=key == "jpeg")
    return Camera(**values)


def _probability(key: str, text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{key}: {text!r} is not a probability (a number from 0 to 1)")
    return p


def _range(key: str, text: str, low: float, high: float, *, whole: bool) -> tuple[float, float]:
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not (low <= values[0] <= values[1] <= high):
        raise ValueError(f"{key}={text}: expected LO:HI (or one value) with {low:g} <= LO <= HI <= {high:g}")
    if whole and any(v != int(v) for v in values):
        raise ValueError(f"{key}={text}: JPEG qualities are whole numbers from 1 to 100")
    return values[0], values[1]


def camera_from_config(cfg) -> Camera | None:
    """The camera of a preset's ``[degrade]`` section (None when ``enabled`` is false)."""
    if not cfg.enabled:
        return None
    names = {f.name for f in fields(Camera)}
    values = {name: getattr(cfg, name) for name in names if name != "resize"}
    values["resize"] = tuple(dict.fromkeys(m.strip() for m in cfg.resize.split(",")))
    return Camera(**values)
