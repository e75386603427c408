"""EdgeFace: variants built as the authors build them, weight loading (float, int8, TorchScript, checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from engine.io import atomic
from engine.errors import WeightsError
from engine.models import edgeface as E

# six of the eleven Yale conditions per subject, side lighting included (a random network's similarity follows
# lighting and background; the pretrained one's should follow identity)
YALE_EXPRESSIONS = ("normal", "leftlight", "rightlight", "happy", "sad", "surprised")
WEIGHTS = {"edgeface_xxs_q.pt": ("edgeface_xxs", 1.24e6), "edgeface_xs_q.pt": ("edgeface_xs", 2.24e6)}


@pytest.fixture(scope="module")
def xxs() -> E.EdgeFace:
    torch.manual_seed(0)
    return E.build_edgeface("edgeface_xxs").eval()


def _lowrank_modules(model: nn.Module) -> dict[str, E.LowRankLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, E.LowRankLinear)}


@pytest.mark.parametrize("variant", ["edgeface_xs_gamma_06", "edgeface_s_gamma_05"])
def test_gamma_variants_replace_every_linear_with_the_authors_rank(variant):
    model = E.build_edgeface(variant)
    gamma = E.VARIANTS[variant].gamma
    low_rank = _lowrank_modules(model)
    plain = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith((".linear1", ".linear2"))]
    assert plain == []
    assert "model.head.fc" in low_rank  # the authors' rule replaces the embedding fc too
    for module in low_rank.values():
        assert module.rank == max(2, int(min(module.in_features, module.out_features) * gamma))
        assert module.linear1.bias is None
    assert E.infer_variant(model.state_dict()) == variant


def test_plain_variants_keep_linear_layers_and_are_recognised_from_their_state_dict():
    for variant in ("edgeface_xxs", "edgeface_xs", "edgeface_base"):
        model = E.build_edgeface(variant)
        assert _lowrank_modules(model) == {}
        assert model.model.head.fc.out_features == 512
        assert E.infer_variant(model.state_dict()) == variant


def test_forward_and_features_agree_and_return_four_stages(xxs):
    x = E.prepare_input(torch.rand(3, 3, 128, 128))
    with torch.no_grad():
        emb = xxs(x)
        emb2, stages = xxs.features(x)
    assert emb.shape == (3, 512)
    torch.testing.assert_close(emb, emb2)
    assert [s.shape[1] for s in stages] == xxs.stage_channels == [24, 48, 88, 168]
    assert [s.shape[-1] for s in stages] == [28, 14, 7, 3]


def test_features_give_gradient_to_the_input(xxs):
    x = E.prepare_input(torch.rand(2, 3, 64, 64)).requires_grad_(True)
    emb, stages = xxs.features(x)
    (emb.square().mean() + sum(s.square().mean() for s in stages)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_prepare_input_resizes_to_112_and_maps_to_minus_one_one():
    out = E.prepare_input(torch.full((2, 3, 32, 32), 0.5))
    assert out.shape == (2, 3, 112, 112)
    assert out.abs().max() < 1e-6
    ramp = E.prepare_input(torch.stack([torch.zeros(3, 128, 128), torch.ones(3, 128, 128)]))
    torch.testing.assert_close(ramp[0], torch.full_like(ramp[0], -1.0))
    torch.testing.assert_close(ramp[1], torch.full_like(ramp[1], 1.0))
    with pytest.raises(ValueError):
        E.prepare_input(torch.rand(3, 112, 112))


def test_project_checkpoint_round_trip(tmp_path, xxs):
    path = atomic.torch_save(tmp_path / "best.pt", E.edgeface_checkpoint(xxs, classes=["a", "b"], epoch=3))
    loaded = E.load_edgeface(path).eval()
    assert loaded.variant == "edgeface_xxs"
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), xxs(x))
    assert all(p.requires_grad for p in loaded.parameters())


def _quantised_authors_file(tmp_path: Path, model: E.EdgeFace) -> tuple[Path, nn.Module]:
    """An int8 file made the authors' way: quantize_dynamic of every Linear, then torch.save(state_dict)."""
    wrapper = nn.Module()
    wrapper.model = model.model
    quantised = torch.ao.quantization.quantize_dynamic(wrapper, {nn.Linear}, dtype=torch.qint8).eval()
    path = tmp_path / "edgeface_xxs_q.pt"
    torch.save(quantised.state_dict(), path)
    return path, quantised


def test_int8_state_dict_is_dequantised_into_the_float_model(tmp_path):
    torch.manual_seed(1)
    source = E.build_edgeface("edgeface_xxs").eval()
    path, quantised = _quantised_authors_file(tmp_path, source)
    loaded = E.load_edgeface(path).eval()
    assert loaded.variant == "edgeface_xxs"
    assert all(p.dtype == torch.float32 and p.requires_grad for p in loaded.parameters())
    x = torch.rand(4, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        cos = F.cosine_similarity(loaded(x), quantised.model(x))
    assert cos.min() > 0.9


def test_missing_and_unexpected_keys_are_listed(tmp_path, xxs):
    sd = dict(xxs.state_dict())
    sd.pop("model.stages.2.blocks.0.gamma")
    sd["model.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as info:
        E.load_edgeface(path)
    message = str(info.value)
    assert "missing keys: model.stages.2.blocks.0.gamma" in message
    assert "unexpected keys: model.extra.weight" in message


def test_wrong_variant_missing_file_and_foreign_files_are_user_errors(tmp_path, xxs):
    path = atomic.torch_save(tmp_path / "w.pt", dict(xxs.state_dict()))
    with pytest.raises(WeightsError, match='runtime.edgeface_variant = "edgeface_xxs"'):
        E.load_edgeface(path, "edgeface_xs_gamma_06")
    assert E.load_edgeface(path, "edgeface_xxs").variant == "edgeface_xxs"
    with pytest.raises(WeightsError, match=r"nowhere\.pt not found.*EdgeFace release"):
        E.load_edgeface(tmp_path / "nowhere.pt")
    dsr = atomic.torch_save(tmp_path / "dsr.pt", {"kind": "dsr", "state_dict": {}})
    with pytest.raises(WeightsError, match="'dsr' checkpoint"):
        E.load_edgeface(dsr)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        E.load_edgeface(garbage)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an EdgeFace state dict"):
        E.load_edgeface(tmp_path / "other.pt")


def test_torchscript_runs_for_inference_only(tmp_path, xxs):
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(xxs, x), str(path))
    with pytest.raises(WeightsError, match="TorchScript.*feature matching.*fine-tuning need"):
        E.load_edgeface(path)
    scripted = E.load_recogniser(path)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), xxs(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(WeightsError, match="TorchScript"):
        scripted.features(x)


# ----------------------------------------------------------------------------- real weights and faces


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_authors_int8_files_load_with_no_missing_or_unexpected_keys(shared_dir, name):
    path = shared_dir / "weights" / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    variant, params = WEIGHTS[name]
    raw = torch.load(path, map_location="cpu", weights_only=False)
    model = E.EdgeFace(variant)
    result = model.load_state_dict(E.dequantize_state_dict(raw))  # strict: raises on any key mismatch
    assert not result.missing_keys and not result.unexpected_keys
    loaded = E.load_edgeface(path)
    assert loaded.variant == variant
    assert abs(E.count_all_parameters(loaded) - params) / params < 0.01


@pytest.mark.shared
def test_loading_the_authors_int8_weights_warns_nothing(shared_dir):
    """torch deprecated the APIs that rebuild the _q files' storages and qint8 tensors and said so (TypedStorage,
    torch.quantize_per_tensor) on every job that loaded them."""
    import warnings

    path = shared_dir / "weights" / "edgeface_xxs_q.pt"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = E.load_edgeface(path)
    assert model.variant == "edgeface_xxs"
    assert [str(w.message)[:60] for w in caught] == []


def test_only_the_two_quantised_load_warnings_are_silenced(monkeypatch, tmp_path):
    """Around the load, exactly torch's two deprecation messages go; any other warning still reaches the user."""
    import warnings

    from engine.io import checkpoints

    def load(path, **_kwargs):
        warnings.warn("TypedStorage is deprecated. It will be removed in the future", UserWarning)
        warnings.warn("torch.quantize_per_tensor, torch.quantize_per_channel and other quantized tensor creation "
                      "functions ... are deprecated and will be removed", UserWarning)
        warnings.warn("TypedStorage is deprecated (but a DeprecationWarning)", DeprecationWarning)
        warnings.warn("something else about this file", UserWarning)
        raise WeightsError("stop here")

    monkeypatch.setattr(checkpoints, "load_checkpoint", load)
    (tmp_path / "w.pt").write_bytes(b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError):
            E.load_edgeface(tmp_path / "w.pt")
        warnings.warn("TypedStorage is deprecated, said after the load", UserWarning)
    assert [str(w.message) for w in caught] == ["TypedStorage is deprecated (but a DeprecationWarning)",
                                                "something else about this file",
                                                "TypedStorage is deprecated, said after the load"]


def _yale(shared_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    folder = shared_dir / "faces" / "yale"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    images, labels = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lstrip(".") not in YALE_EXPRESSIONS:
            continue
        with Image.open(path) as gif:
            image = gif.convert("RGB")
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((112, 112), Image.BILINEAR)
        images.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(112, 112, 3))
        labels.append(int(path.name.split(".")[0].removeprefix("subject")))
    assert len(set(labels)) == 15 and len(labels) == 90
    return torch.stack(images).permute(0, 3, 1, 2).float() / 255.0, torch.tensor(labels)


@pytest.mark.shared
def test_pretrained_xxs_scores_same_subject_pairs_above_different_subject_pairs(shared_dir):
    path = shared_dir / "weights" / "edgeface_xxs_q.pt"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    images, labels = _yale(shared_dir)
    torch.manual_seed(0)
    gaps = {}
    for name, model in (("pretrained", E.load_edgeface(path)), ("random", E.build_edgeface("edgeface_xxs"))):
        with torch.no_grad():
            emb = E.embed(model.eval(), images)
        sim = emb @ emb.T
        same = labels[:, None] == labels[None, :]
        off_diag = ~torch.eye(len(labels), dtype=torch.bool)
        gaps[name] = (sim[same & off_diag].mean() - sim[~same].mean()).item()
    assert gaps["pretrained"] > 0.2
    assert gaps["pretrained"] > gaps["random"] + 0.05  # more than lighting and background similarity
