"""The camera model (engine/data/camera): its spec, each step of the chain, JPEG against libjpeg, the preset's
[degrade] section, and the degradation inside training: fresh every epoch, repeated by the seed and by a resume,
the same for the DSR row and the bicubic row of a pipeline."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine import presets
from engine.data.camera import Camera, degrade, degrade_named, parse_spec
from engine.data.camera.jpeg import jpeg
from engine.errors import PresetError
from engine.events import Finished, Progress
from engine.jobs.registry import JobRequest, StopFlag, run_job
from tiny import tiny_dsr_data, tiny_dsr_preset


def _faces(n=8, size=64, seed=0) -> torch.Tensor:
    """Smooth random uint8 'faces': low-frequency content, like a downsampled photo."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g)
    return (torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic").clamp(0, 1) * 255).round().to(torch.uint8)


def _detail(images: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels: what blur removes and noise adds."""
    x = images.float()
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


# ----------------------------------------------------------------------------- the spec


def test_a_spec_reads_every_step_and_writes_back_the_same_text():
    text = ("blur=0.3:1.5,aniso=0.5,motion=1:3@0.5,resize=bicubic|bilinear|area,noise=0:6,gray=0.3,"
            "poisson=0.2:1@0.5,jpeg=40:90,second=0.5")
    camera = parse_spec(text)
    assert camera.blur_p == 1.0 and camera.blur_sigma == (0.3, 1.5) and camera.motion_p == 0.5
    assert camera.resize == ("bicubic", "bilinear", "area") and camera.second_pass_p == 0.5
    assert camera.to_spec() == text and parse_spec(camera.to_spec()) == camera
    assert parse_spec("default").to_spec() == "blur=0.3:1.5,noise=0:6,jpeg=40:90"
    assert parse_spec("off") is None and parse_spec("") is None


@pytest.mark.parametrize("text", ["blur=2:1", "jpeg=0:50", "noise=a", "fog=1", "blur=1,blur=2", "jpeg=30.5:60",
                                  "resize=nearest", "aniso=2", "blur=1:2@1.5", "motion"])
def test_bad_specs_are_refused_naming_the_item(text):
    with pytest.raises(ValueError) as exc:
        parse_spec(text)
    assert text.split(",")[-1].split("=")[0] in str(exc.value)


def test_the_preset_section_is_validated_like_every_key():
    base = presets.load("cpu-demo")
    assert base.degrade.enabled is False                       # off in the built-in presets
    assert all(presets.load(name).degrade.enabled is False for name in ("vlr-32x32", "vlr-14x16", "cpu-real"))
    cases = {"degrade.blur_p": 1.5, "degrade.jpeg_quality": [40.5, 90], "degrade.resize": "bicubic,nearest",
             "degrade.noise_sigma": [8, 2], "eval.probe_degrade": "fog=1"}
    for key, value in cases.items():
        with pytest.raises(PresetError) as exc:
            base.with_changes({key: value})
        assert key in str(exc.value)
    with pytest.raises(PresetError) as exc:
        presets.Preset.from_mapping({"degrade": {"blur_sigmas": [0, 1]}}, source="my.toml")
    assert "did you mean 'degrade.blur_sigma'" in str(exc.value)
    with pytest.raises(PresetError) as exc:
        presets.Preset.from_mapping({"degrad": {}}, source="my.toml")
    assert "did you mean 'degrade'" in str(exc.value)


# ----------------------------------------------------------------------------- the chain


def test_each_step_does_what_it_says():
    hr = _faces()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = degrade(hr, (16, 16), Camera(), g())
    assert plain.shape == (8, 3, 16, 16) and plain.dtype == torch.uint8
    blurred = degrade(hr, (16, 16), parse_spec("blur=1.2"), g())
    moved = degrade(hr, (16, 16), parse_spec("motion=3"), g())
    noisy = degrade(hr, (16, 16), parse_spec("noise=8"), g())
    shot = degrade(hr, (16, 16), parse_spec("poisson=2"), g())
    assert _detail(blurred) < 0.8 * _detail(plain) and _detail(moved) < _detail(plain)
    residual = noisy.float() - plain.float()
    assert 6.0 < float(residual.std()) < 9.0                        # sigma 8 levels (a little clipped)
    bright = (shot.float() - plain.float())[plain > 150].std()
    dark = (shot.float() - plain.float())[plain < 60].std()
    assert float(bright) > 1.2 * float(dark) > 0                    # shot noise grows with the intensity
    gray = degrade(hr, (16, 16), parse_spec("noise=8,gray=1"), g()).float() - plain.float()
    assert float((gray[:, 0] - gray[:, 1]).abs().mean()) < 1.0 < float((residual[:, 0] - residual[:, 1]).abs().mean())
    methods = [degrade(hr, (16, 16), parse_spec(f"resize={m}"), g()) for m in ("bicubic", "bilinear", "area")]
    assert not torch.equal(methods[0], methods[1]) and not torch.equal(methods[1], methods[2])
    low, high = (degrade(hr, (16, 16), parse_spec(f"jpeg={q}"), g()) for q in (10, 90))
    assert float((low.float() - plain.float()).abs().mean()) > 1.5 * float((high.float() - plain.float()).abs().mean()) > 0
    narrow = degrade(hr, (14, 16), parse_spec("default"), g())
    assert narrow.shape == (8, 3, 16, 14)                         # 14 wide x 16 tall
    second = degrade(hr, (16, 16), parse_spec("noise=4,second=1"), g())
    assert _detail(second) > _detail(noisy) * 0.5 and not torch.equal(second, noisy)


def test_draws_repeat_with_the_generator_and_change_with_it():
    hr, camera = _faces(), parse_spec("blur=0.3:1.5,aniso=0.5,motion=1:3@0.5,noise=0:6,poisson=0.2:1@0.5,jpeg=40:90,"
                                      "resize=bicubic|area,second=0.3")
    a = degrade(hr, (16, 16), camera, torch.Generator().manual_seed(1))
    b = degrade(hr, (16, 16), camera, torch.Generator().manual_seed(1))
    c = degrade(hr, (16, 16), camera, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # a named image's degradation depends on (seed, name) alone, not on its neighbours in the batch
    one, drawn = degrade_named(hr[:1], (16, 16), camera, 7, ["test/x.png"])
    with_others, _ = degrade_named(hr[[1, 0]], (16, 16), camera, 7, ["test/y.png", "test/x.png"])
    assert torch.equal(one[0], with_others[1]) and 0.3 <= drawn[0]["sigma_x"] <= 1.5


@pytest.mark.parametrize("quality", [20, 50, 85])
def test_jpeg_in_tensor_maths_is_close_to_libjpeg(quality):
    image = _faces(1, 32, seed=quality)[0]
    noisy = (image.float() + torch.randn(image.shape, generator=torch.Generator().manual_seed(0)) * 12)
    image = noisy.round().clamp(0, 255).to(torch.uint8)      # detail for the codec to throw away
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    reference = torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1).float()
    ours = jpeg(image[None], torch.tensor([quality]))[0].float()
    loss = float((reference - image.float()).abs().mean())
    assert loss > 3.0                                          # the codec changed the image
    assert float((ours - reference).abs().mean()) < 0.3 * loss  # and ours changed it the same way


# ----------------------------------------------------------------------------- inside training


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tiny_dsr_data(tmp_path_factory.mktemp("camera") / "data", identities=8, per_identity=4)


CAMERA = {"degrade.enabled": True, "degrade.second_pass_p": 0.3, "dsr.batch_size": 4, "dsr.ema_decay": 0.9,
          "dsr.early_stop_patience": 0}


def _recorded(monkeypatch, module):
    """Wrap ``module.degrade`` so that every batch it makes is hashed into the returned list."""
    seen: list[str] = []
    real = module.degrade

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(hashlib.sha1(out.cpu().numpy().tobytes()).hexdigest())
        return out

    monkeypatch.setattr(module, "degrade", recording)
    return seen


def test_dsr_degrades_afresh_each_epoch_repeats_with_the_seed_and_after_a_resume(tmp_path, tiny_root, monkeypatch):
    import engine.train.dsr as dsr_module

    seen = _recorded(monkeypatch, dsr_module)
    preset = tiny_dsr_preset(tmp_path / "runs", **CAMERA)
    def run(name, emit=lambda e: None, stop=None, **options):
        options = options or {"epochs": 2, "run_dir": str(tmp_path / name)}
        return run_job(JobRequest("train-dsr", preset, None if "resume" in options else str(tiny_root), options),
                       emit, stop)

    first = run("a")
    assert isinstance(first, Finished) and first.summary["camera"].startswith("blur=0.2:1.5@0.9")
    straight = list(seen)
    steps = len(straight) // 2
    assert steps >= 2 and straight[:steps] != straight[steps:]     # epoch 2 saw other degradations
    seen.clear()
    again = run("b")
    assert isinstance(again, Finished) and seen == straight         # the same seed: the same faces
    seen.clear()
    stop = StopFlag()

    def emit(event):   # stop inside epoch 2, after its first step
        if isinstance(event, Progress) and event.stage == "dsr" and event.epoch == 2 and event.step == 1:
            stop.set()

    cut = run("c", emit, stop)
    assert isinstance(cut, Finished) and cut.stopped
    done = len(seen)
    resumed = run("c", resume=str(tmp_path / "c"))
    assert isinstance(resumed, Finished) and not resumed.stopped
    assert seen[:done] == straight[:done] and seen[done:] == straight[done:]    # the resume drew what was left
    assert first.summary["best_val_psnr"] == again.summary["best_val_psnr"]


def test_the_dsr_row_and_the_bicubic_row_are_fine_tuned_on_the_same_degraded_faces(tmp_path, tiny_root, monkeypatch):
    import engine.train.recognition as recognition

    from engine.io import atomic
    from engine.models.dsr import DSRNet
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    torch.manual_seed(0)
    weights = atomic.torch_save(tmp_path / "xxs.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))
    dsr = DSRNet((8, 8), 32, 8, 1)
    dsr_file = atomic.torch_save(tmp_path / "dsr.pt", {"kind": "dsr", "config": dsr.config,
                                                       "state_dict": dsr.state_dict(), "epoch": 1})
    preset = tiny_dsr_preset(tmp_path / "runs", **{**CAMERA, "finetune.batch_size": 8, "finetune.jitter_hue": 0.0,
                                                   "finetune.lambda_distill": 0.5, "finetune.head": "adaface"})
    seen = _recorded(monkeypatch, recognition)
    options = {"edgeface": str(weights), "stage1_epochs": 1, "stage2_epochs": 1}
    with_dsr = run_job(JobRequest("finetune", preset, str(tiny_root), {**options, "dsr": str(dsr_file)}), lambda e: None)
    assert isinstance(with_dsr, Finished), getattr(with_dsr, "error", "")
    dsr_row = list(seen)
    seen.clear()
    bicubic = run_job(JobRequest("finetune", preset, str(tiny_root), options), lambda e: None)
    assert isinstance(bicubic, Finished), getattr(bicubic, "error", "")
    assert len(dsr_row) >= 4 and seen == dsr_row                    # the same degraded faces, step by step
    assert len(set(dsr_row)) == len(dsr_row)                        # and every step's are new
    for result in (with_dsr, bicubic):
        assert result.summary["camera"] and result.summary["head"] == "adaface"
        assert result.summary["lambda_distill"] == 0.5
    assert {with_dsr.summary["input"], bicubic.summary["input"]} == {"dsr", "bicubic"}


def test_the_second_pass_degrades_on_the_2x_grid_before_the_final_pass():
    from dataclasses import replace

    from engine.data.camera import draw
    from engine.data.camera.chain import apply

    hr, camera = _faces(), parse_spec("jpeg=10,second=1")
    draws = draw(camera, 8, torch.Generator().manual_seed(3))
    assert bool(draws.second.all()) and int(draws.first.quality.min()) == 10
    twice = apply(hr, (16, 16), camera, draws, torch.Generator())
    once = apply(hr, (16, 16), camera, replace(draws, first=None), torch.Generator())   # the same final pass alone
    assert float((twice.float() - once.float()).abs().mean()) > 1.0


def test_adaface_moves_from_arcface_to_cosface_to_its_hard_sample_margin_with_the_norm():
    import math

    from engine.models.adaface import AdaFaceHead

    head = AdaFaceHead(4, 3, scale=1.0, margin=0.4).eval()        # eval: the norm statistics stay as set
    head.norm_mean.fill_(20.0)
    head.norm_std.fill_(1.0)
    theta = 1.0
    cos = torch.tensor([[math.cos(theta), 0.1, 0.2]] * 3)
    labels = torch.zeros(3, dtype=torch.long)
    norms = torch.tensor([17.0, 20.0, 23.0])                       # z = -1, 0, +1 (h = 0.333, clipped)
    target = head.margin_logits(cos, labels, norms)[:, 0]
    m = 0.4
    expected = [math.cos(theta + 0.999 * m) - m * 0.001, math.cos(theta) - m, math.cos(theta - m) - 2 * m]
    assert torch.allclose(target, torch.tensor(expected), atol=2e-3)
    assert torch.equal(head.margin_logits(cos, labels, norms)[:, 1:], cos[:, 1:])   # other classes: plain cosines
    head.train()
    head.margin_logits(cos, labels, norms)
    assert float(head.norm_std) > 1.0                              # training updates the statistics (batch std 3)
