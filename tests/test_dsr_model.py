"""The DSR network: output sizes for every VLR layout, true parameter count, bicubic start, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from engine.io import atomic
from engine.errors import DataError, WeightsError
from engine.metrics.image import psnr
from engine.models.dsr import DSRNet, count_trainable_parameters, load_dsr, upscale_bicubic, upscale_factor
from engine.models.resize import Resize


def _conv(cin: int, cout: int) -> int:
    return cin * cout * 9 + cout


def expected_parameters(vlr_size, hr, c, blocks) -> int:
    stages = int(math.log2(upscale_factor(vlr_size, hr)))
    return _conv(3, c) + blocks * 2 * _conv(c, c) + _conv(c, c) + stages * _conv(c, 4 * c) + _conv(c, 3)


@pytest.mark.parametrize("vlr_size, factor", [((32, 32), 4), ((14, 16), 8), ((16, 16), 8), ((20, 20), 8)])
def test_every_vlr_size_reaches_the_hr_square(vlr_size, factor):
    model = DSRNet(vlr_size, 128, base_channels=8, residual_blocks=2)
    assert model.factor == factor
    out = model(torch.rand(2, 3, vlr_size[1], vlr_size[0]))
    assert out.shape == (2, 3, 128, 128)
    assert count_trainable_parameters(model) == expected_parameters(vlr_size, 128, 8, 2)


@pytest.mark.parametrize("vlr_size", [(32, 32), (14, 16), (16, 16)])
def test_the_deployed_copy_with_matrix_resizes_and_transposed_shuffles_gives_the_same_faces(vlr_size):
    torch.manual_seed(0)
    model = DSRNet(vlr_size, 128, base_channels=8, residual_blocks=2).eval()
    with torch.no_grad():
        model.tail.weight.mul_(10.0)        # a residual that matters, not the near-zero one of step 0
    fixed = model.for_deployment()
    assert isinstance(model.base_to_hr, Resize) and not isinstance(fixed.base_to_hr, Resize)   # a copy
    assert fixed.state_dict().keys() == model.state_dict().keys()      # checkpoints unchanged
    assert not any(isinstance(m, torch.nn.PixelShuffle) for m in fixed.modules())
    vlr = torch.rand(3, 3, vlr_size[1], vlr_size[0])
    with torch.no_grad():
        reference, deployed = model(vlr), fixed(vlr)
    assert reference.abs().max() > 0.5 and (reference - deployed).abs().max() < 1e-5


def test_a_matrix_resize_equals_interpolate_for_the_recognisers_input():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 128, 128)
    resize = Resize((112, 112), "bilinear", antialias=True)
    matrices = resize.as_matrices((128, 128))
    assert matrices.rows.shape == (112, 128)
    assert (resize(x) - matrices(x)).abs().max() < 5e-5
    assert isinstance(resize.as_matrices((112, 112)), torch.nn.Identity)
    assert torch.equal(resize(x[..., :112, :112]), x[..., :112, :112])    # already that size: untouched


def test_guide_sizes_report_their_true_parameter_count():
    # the guide says "~2.3M -> 2.6M" for 128 channels x 16 blocks; the blocks alone hold ~4.7M
    big = DSRNet((32, 32), 128, base_channels=128, residual_blocks=16)
    assert count_trainable_parameters(big) == expected_parameters((32, 32), 128, 128, 16)
    assert count_trainable_parameters(big) > 16 * 2 * _conv(128, 128) > 2_600_000


def test_untrained_network_starts_near_bicubic():
    torch.manual_seed(0)
    model = DSRNet((16, 16), 128, base_channels=16, residual_blocks=2)
    vlr = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        sr = model(vlr)
    assert psnr(sr, upscale_bicubic(vlr, 128)).min() > 30.0


def test_wrong_vlr_size_is_a_data_error_naming_both_sizes():
    model = DSRNet((32, 32), 128, base_channels=8, residual_blocks=1)
    with pytest.raises(DataError, match="32x32.*16x16"):
        model(torch.rand(1, 3, 16, 16))


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = DSRNet((14, 16), 128, base_channels=8, residual_blocks=2)
    path = atomic.torch_save(tmp_path / "best.pt", {"kind": "dsr", "config": model.config,
                                                     "state_dict": model.state_dict(), "epoch": 3})
    loaded, checkpoint = load_dsr(path)
    vlr = torch.rand(2, 3, 16, 14)
    with torch.no_grad():
        assert torch.equal(loaded(vlr), model.eval()(vlr))
    assert checkpoint["epoch"] == 3 and not loaded.training

    with pytest.raises(WeightsError, match=str(tmp_path / "missing.pt")):
        load_dsr(tmp_path / "missing.pt")
    atomic.torch_save(tmp_path / "other.pt", {"kind": "edgeface", "state_dict": {}})
    with pytest.raises(WeightsError, match="not a DSR checkpoint"):
        load_dsr(tmp_path / "other.pt")
    bad = {"kind": "dsr", "config": dict(model.config, base_channels=16), "state_dict": model.state_dict()}
    atomic.torch_save(tmp_path / "bad.pt", bad)
    with pytest.raises(WeightsError, match="does not fit"):
        load_dsr(tmp_path / "bad.pt")
