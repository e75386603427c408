"""DSR loss terms: each one sends gradient into DSR through its frozen network, and computes what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from engine.errors import WeightsError
from engine.losses.combined import DSRCriterion, LossWeights
from engine.losses.critic import FrozenRecogniser
from engine.losses.feature_match import feature_match_loss
from engine.losses.identity import identity_loss
from engine.losses.perceptual import (VGG19_FILE, VGG19_LAYER_WEIGHTS, VGGPerceptualLoss, load_vgg19,
                                      vgg19_weights_path)
from engine.losses.tv import tv_loss
from engine.models.dsr import DSRNet
from engine.models.edgeface import build_edgeface


@pytest.fixture(scope="module")
def critic() -> FrozenRecogniser:
    torch.manual_seed(0)
    return FrozenRecogniser(build_edgeface("edgeface_xxs"))


def _dsr_and_batch():
    torch.manual_seed(1)
    model = DSRNet((16, 16), 128, base_channels=8, residual_blocks=1)
    hr = torch.rand(2, 3, 128, 128)
    vlr = F.avg_pool2d(hr, 8)
    return model, vlr, hr


def _dsr_gradient_norms(model: DSRNet) -> dict[str, float]:
    return {name: (p.grad.norm().item() if p.grad is not None else 0.0) for name, p in model.named_parameters()}


@pytest.mark.parametrize("term", ["identity", "feature_match"])
def test_recogniser_terms_alone_train_the_dsr_network(critic, term):
    model, vlr, hr = _dsr_and_batch()
    weights = LossWeights(l1=0.0, tv=0.0, **{term: 1.0}, perceptual_network="edgeface")
    criterion = DSRCriterion(weights, critic=critic)
    criterion.train()  # a trainer's .train() must not wake the frozen recogniser
    total, terms = criterion(model(vlr), hr)
    assert total.item() == pytest.approx(terms[term].item()) and total.item() > 0
    total.backward()
    grads = _dsr_gradient_norms(model)
    assert grads["head.weight"] > 0 and grads["tail.weight"] > 0  # reaches the first and the last layer
    assert all(torch.isfinite(torch.tensor(list(grads.values()))))
    assert not critic.training and not critic.net.training
    assert all(p.grad is None and not p.requires_grad for p in critic.parameters())


def test_recogniser_terms_vanish_for_identical_images(critic):
    hr = torch.rand(2, 3, 128, 128)
    out = critic(hr, hr)
    assert identity_loss(out.sr_embedding, out.hr_embedding).item() == pytest.approx(0.0, abs=1e-5)
    assert feature_match_loss(out.sr_stages, out.hr_stages).item() == pytest.approx(0.0, abs=1e-6)
    assert len(out.sr_stages) == 4


def test_identity_and_feature_match_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 3.0], [0.0, -1.0]])
    assert identity_loss(a, b).item() == pytest.approx((1.0 + 2.0) / 2)  # cos 0 and cos -1
    hr_stages = [torch.full((1, 2, 2, 2), 2.0), torch.full((1, 4, 1, 1), 1.0)]
    sr_stages = [torch.full((1, 2, 2, 2), 1.0), torch.full((1, 4, 1, 1), 1.0)]
    assert feature_match_loss(sr_stages, hr_stages).item() == pytest.approx((1.0 / 4.0 + 0.0) / 2)


@pytest.fixture(scope="module")
def random_vgg():
    torch.manual_seed(2)
    return torchvision.models.vgg19(weights=None)


def test_perceptual_taps_the_four_relus_with_their_weights(random_vgg):
    loss = VGGPerceptualLoss(random_vgg)
    sr, hr = torch.rand(2, 3, 64, 64, requires_grad=True), torch.rand(2, 3, 64, 64)
    feats = loss.layer_features(sr)
    assert {name: tuple(f.shape[1:]) for name, f in feats.items()} == {
        "relu1_2": (64, 64, 64), "relu2_2": (128, 32, 32), "relu3_4": (256, 16, 16), "relu4_4": (512, 8, 8)}
    # relu1_2 is the 4th module: check the tap against the plain VGG prefix on normalised input
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(feats["relu1_2"], random_vgg.features[:4]((sr - mean) / std), atol=1e-5)
    hr_feats = loss.layer_features(hr)
    expected = sum(VGG19_LAYER_WEIGHTS[n] * F.l1_loss(feats[n], hr_feats[n]) for n in feats)
    value = loss(sr, hr)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert VGG19_LAYER_WEIGHTS == {"relu1_2": 0.4, "relu2_2": 0.3, "relu3_4": 0.2, "relu4_4": 0.1}
    single = VGGPerceptualLoss(random_vgg, {"relu2_2": 1.0})
    assert single(sr, hr).item() == pytest.approx(F.l1_loss(feats["relu2_2"], hr_feats["relu2_2"]).item(), rel=1e-5)
    assert loss(hr, hr).item() == 0.0


def test_perceptual_term_trains_the_dsr_network(random_vgg):
    model, vlr, hr = _dsr_and_batch()
    criterion = DSRCriterion(LossWeights(l1=0.0, tv=0.0, perceptual=1.0), vgg=VGGPerceptualLoss(random_vgg))
    total, terms = criterion(model(vlr), hr)
    total.backward()
    assert set(terms) == {"l1", "tv", "perceptual"}
    assert _dsr_gradient_norms(model)["head.weight"] > 0
    assert all(p.grad is None for p in random_vgg.parameters())


def test_missing_vgg_weights_name_the_path_and_the_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / VGG19_FILE
    assert vgg19_weights_path("") == expected
    with pytest.raises(WeightsError) as info:
        load_vgg19("")
    message = str(info.value)
    assert str(expected) in message and "dsr.vgg19_weights" in message
    assert "perceptual_network" in message and "lambda_perceptual = 0" in message
    with pytest.raises(WeightsError, match=str(tmp_path / "mine.pth")):
        load_vgg19(str(tmp_path / "mine.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(WeightsError, match="is not torchvision's VGG19"):
        load_vgg19(str(tmp_path / "junk.pth"))


def test_total_variation():
    assert tv_loss(torch.full((1, 3, 8, 8), 0.3)).item() == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., 1::2] = 1.0  # vertical stripes: every horizontal neighbour differs by 1
    assert tv_loss(stripes).item() == pytest.approx(1.0)
