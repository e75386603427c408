"""The optimiser update skips non-finite steps on the device, and a training step makes no host sync.

A host sync (``item()``, ``bool()``, ``float()`` of a tensor) stalls a GPU until its queue drains;
on the CPU it is free, so it is counted here instead of timed: every one of them goes through
``aten._local_scalar_dense``, which a dispatch mode sees.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.data.augment import FinetuneAugment
from engine.data import load_split
from engine.data.placement import BatchFeeder
from engine.losses.combined import build_criterion
from engine.models.arcface import ArcFaceHead
from engine.models.edgeface import EMBEDDING_DIM, build_edgeface
from engine.presets import load
from engine.runtime import Runtime
from engine.train.loop_state import Sums
from engine.train.dsr import build_training
from engine.train.recognition import ArcFaceNet, ArcFaceStep, LabelledImages, arcface_optimizer
from engine.train.update import NonFiniteCount, OptimizerUpdate, skips_on_device

CPU = torch.device("cpu")


class HostSyncs(TorchDispatchMode):
    """Counts the reads of a tensor's value by the host (item, bool, float, int, nonzero, equal)."""

    READS = {"_local_scalar_dense", "nonzero", "equal"}

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in self.READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _linear(kind: dict) -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, **kind)


@pytest.mark.parametrize("kind", [{"fused": True}, {"foreach": True}], ids=["fused", "foreach"])
def test_a_non_finite_step_leaves_weights_and_optimiser_state_untouched_and_is_counted(kind):
    model, optimizer = _linear(kind)
    count = NonFiniteCount(CPU)
    update = OptimizerUpdate(optimizer, torch.amp.GradScaler("cpu", enabled=False), model.parameters(), 1.0, count)
    x = torch.rand(5, 4)
    assert skips_on_device(optimizer) == ("fused" in kind)

    assert bool(update(model(x).sum()))                           # a finite step is applied
    after_one = {k: v.clone() for k, v in model.state_dict().items()}
    steps_after_one = float(optimizer.state[model.weight]["step"])
    for _ in range(3):
        assert not bool(update(model(x).sum() * float("nan")))    # NaN loss: skipped
    assert all(torch.equal(after_one[k], v) for k, v in model.state_dict().items())
    assert float(optimizer.state[model.weight]["step"]) == steps_after_one == 1.0
    assert bool(update(model(x).sum() * 0.5))                     # training goes on
    assert not torch.equal(after_one["weight"], model.weight)
    assert count.read() == (3, 3)                                 # 3 skipped, 3 in a row
    assert count.read() == (0, 0)                                 # read resets; the run ended


def test_the_longest_run_carries_over_a_read_while_it_goes_on():
    count = NonFiniteCount(CPU)
    for finite in (True, False, False):
        count.add(torch.tensor(finite))
    assert count.read() == (2, 2)
    for finite in (False, False, True, False):
        count.add(torch.tensor(finite))
    assert count.read() == (3, 4)          # the run of 2 went on to 4 across the read


def test_sums_of_skipped_steps_stay_out_without_a_sync():
    sums = Sums()
    with HostSyncs() as syncs:
        sums.add({"loss": torch.tensor(2.0)}, 4, torch.tensor(True))
        sums.add({"loss": torch.tensor(float("nan"))}, 4, torch.tensor(False))
        sums.add({"loss": torch.tensor(4.0)}, 2, torch.tensor(True))
    assert syncs.calls == []
    assert sums.count == 6 and sums.means(ctx=_single()) == {"loss": pytest.approx((2 * 4 + 4 * 2) / 6)}


def _single():
    from engine.distributed import SINGLE

    return SINGLE


def _tiny_preset():
    return load("cpu-demo").with_changes({"dsr.base_channels": 8, "dsr.residual_blocks": 1, "dsr.batch_size": 4,
                                          "finetune.batch_size": 4, "runtime.edgeface_variant": "edgeface_xxs"})


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_dsr_training_step_makes_no_host_sync(demo_root, amp):
    """Every loss term, augmentation, clipping, EMA and the skip check: none reads a value on the host."""
    preset = _tiny_preset()
    runtime = Runtime(CPU, amp)
    train = load_split(demo_root, "train", preset.vlr_size, preset.data.hr_size)
    criterion = build_criterion(preset.dsr, build_edgeface("edgeface_xxs"), CPU)
    training = build_training(preset, runtime, criterion, BatchFeeder(CPU), NonFiniteCount(CPU),
                              warmup_steps=2, total_steps=20)
    assert skips_on_device(training.optimizer)
    generator = torch.Generator().manual_seed(0)
    index = torch.arange(4)
    training.step(train, index, generator, 0)                 # first step: lazy state is made
    before = {k: v.clone() for k, v in training.model.state_dict().items()}
    with HostSyncs() as syncs:
        for step in range(1, 4):
            out = training.step(train, index + step, generator, step)
    assert syncs.calls == []
    assert bool(out.applied) and torch.isfinite(out.loss)
    assert any(not torch.equal(before[k], v) for k, v in training.model.state_dict().items())


def test_an_arcface_training_step_makes_no_host_sync(demo_root):
    preset = _tiny_preset()
    runtime = Runtime(CPU, None)
    train = load_split(demo_root, "train", preset.vlr_size, preset.data.hr_size)
    model = build_edgeface("edgeface_xxs")
    head = ArcFaceHead(EMBEDDING_DIM, len(train.classes))
    optimizer = arcface_optimizer(preset, "stage2", True, model, head, CPU)
    update = OptimizerUpdate(optimizer, torch.amp.GradScaler("cpu", enabled=False),
                             [*model.parameters(), *head.parameters()], 0.0, NonFiniteCount(CPU))
    # the hue shift is one factor per batch drawn from the CPU generator (a CPU number: it never waits for a
    # device), so it is left out here; everything else of the guide's fine-tuning augmentation is on
    augment = FinetuneAugment(0.5, 0.2, 0.2, 0.2, 0.0, 10.0)
    step = ArcFaceStep(ArcFaceNet(model, head, 0.1), update, None, augment, BatchFeeder(CPU),
                       lambda vlr: torch.nn.functional.interpolate(vlr.float() / 255, size=128), runtime)
    images = LabelledImages(train.vlr, train.labels)
    generator = torch.Generator().manual_seed(0)
    step(images, torch.arange(4), generator)
    with HostSyncs() as syncs:
        outs = [step(images, torch.arange(4) + k, generator) for k in range(1, 3)]
    assert syncs.calls == []
    assert all(bool(o.applied) for o in outs) and set(outs[0].values) == {"loss", "top1"}



@pytest.mark.gpu   # sync debug mode catches blocking host-to-device copies too
@pytest.mark.parametrize("camera", [False, True], ids=["cached-vlr", "camera"])
def test_on_a_gpu_a_dsr_training_step_makes_no_synchronisation_at_all(demo_root, camera):
    """On CUDA, torch's sync debug mode also catches blocking host-to-device copies (the CPU test cannot); with
    [degrade] on, the camera's blur, resize, noise and JPEG run in the step too (its draws are CPU numbers)."""
    cuda = torch.device("cuda")
    preset = _tiny_preset()
    if camera:
        preset = preset.with_changes({"degrade.enabled": True, "degrade.second_pass_p": 0.5})
    runtime = Runtime(cuda, torch.bfloat16, channels_last=True)
    train = load_split(demo_root, "train", preset.vlr_size, preset.data.hr_size).to(cuda)
    criterion = build_criterion(preset.dsr, build_edgeface("edgeface_xxs"), cuda)
    training = build_training(preset, runtime, criterion, BatchFeeder(cuda), NonFiniteCount(cuda),
                              warmup_steps=2, total_steps=20)
    generator = torch.Generator().manual_seed(0)
    training.step(train, torch.arange(4), generator, 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            training.step(train, torch.arange(4) + step, generator, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_a_checkpoint_with_non_finite_weights_in_any_state_dict_is_named():
    """Bookkeeper.save refuses non-finite weights in every state dict of a checkpoint: the ArcFace
    ``state_dict`` and DSR's raw ``model`` alike (only the first was checked once)."""
    from engine.train.bookkeeper import non_finite_weight

    good = {"conv.weight": torch.ones(2, 2), "steps": torch.tensor(3)}
    bad = {"conv.weight": torch.tensor([[1.0, float("nan")]]), "steps": torch.tensor(3)}
    optimizer = {"state": {0: {"exp_avg": torch.tensor([float("inf")])}}, "param_groups": [{"lr": 0.1}]}
    assert non_finite_weight({"model": good, "state_dict": good, "optimizer": optimizer, "epoch": 3}) is None
    assert non_finite_weight({"model": bad, "optimizer": optimizer}) == "model.conv.weight"
    assert non_finite_weight({"state_dict": good, "head": {"weight": torch.tensor([float("-inf")])}}) == "head.weight"
