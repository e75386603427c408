"""What only a CUDA device can show: every test here is marked ``gpu`` and skipped without CUDA (CI never needs
a GPU). ``pytest -m gpu`` runs them (with the other ``gpu`` tests: the DSR step under sync debug mode in
test_update_step.py, the device placement in test_placement.py); ``benchmarks/gpu_check.py`` runs them first
on a lent device. Each drives the engine's own code at small sizes: seconds on one GPU.

- no synchronisation at all in an ArcFace step (full augmentation, frozen DSR inputs) and in an fp16 DSR
  step with its GradScaler: ``torch.cuda.set_sync_debug_mode("error")`` also catches the blocking
  host-to-device copies that the CPU tests (which count value reads) cannot see;
- fused AdamW skips a non-finite step on the device (no sync), fp16's GradScaler skips an overflow;
- bf16 autocast convolutions with fp32 master weights, channels_last matching the contiguous network;
- ``compile_or_eager`` really compiles on CUDA, and falls back to eager on a real dynamo failure;
- the cache on the device when the measured free memory allows, else pinned staging buffers;
- a real CUDA out-of-memory becomes the guide's batch advice; find-batch backs off at the real limit;
- NCCL with one process (file:// rendezvous): collectives, the engine's all-reduce and DDP;
- the GPU panel's probe reading the real device through nvitop.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from engine import presets
from engine.data import load_split
from engine.data.augment import FinetuneAugment
from engine.data.placement import BatchFeeder, place_splits
from engine.losses.combined import build_criterion
from engine.models.arcface import ArcFaceHead
from engine.models.dsr import DSRNet
from engine.models.edgeface import EMBEDDING_DIM, build_edgeface
from engine.runtime import Runtime, compile_or_eager, fused_adamw_kwargs, prepare_model
from engine.train.dsr import build_training
from engine.train.finetune import super_resolver
from engine.train.recognition import ArcFaceNet, ArcFaceStep, LabelledImages, arcface_optimizer
from engine.train.update import NonFiniteCount, OptimizerUpdate, skips_on_device

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
MIB = 2**20


@contextlib.contextmanager
def no_sync_allowed():
    """Any synchronisation of the host with the GPU inside raises (item(), blocking copies, nonzero ...)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def _preset(tmp_path: Path | None = None, **changes):
    """cpu-demo's every loss term and augmentation at tiny sizes, on CUDA."""
    values = {"dsr.base_channels": 8, "dsr.residual_blocks": 1, "dsr.batch_size": 4, "finetune.batch_size": 4,
              "runtime.edgeface_variant": "edgeface_xxs", "runtime.device": "cuda"}
    if tmp_path is not None:
        values["runtime.runs_dir"] = str(tmp_path / "runs")
    return presets.load("cpu-demo").with_changes({**values, **changes})


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


# ----------------------------------------------------------------------------- steps without a sync


def test_an_arcface_step_makes_no_synchronisation_at_all(demo_root):
    """The fine-tuning step as the trainer builds it: the guide's whole augmentation (hue included), a frozen
    DSR network's outputs as inputs, bf16 and channels_last, fused AdamW: nothing waits for the GPU."""
    preset = _preset()
    runtime = Runtime(CUDA, torch.bfloat16, channels_last=True)
    train = load_split(demo_root, "train", preset.vlr_size, preset.data.hr_size).to(CUDA)
    dsr = prepare_model(DSRNet(preset.vlr_size, 128, 8, 1).to(CUDA).eval().requires_grad_(False), runtime)
    model = prepare_model(build_edgeface("edgeface_xxs").to(CUDA), runtime)
    head = ArcFaceHead(EMBEDDING_DIM, len(train.classes)).to(CUDA)
    optimizer = arcface_optimizer(preset, "stage2", True, model, head, CUDA)
    assert skips_on_device(optimizer)
    update = OptimizerUpdate(optimizer, torch.amp.GradScaler("cuda", enabled=False),
                             [*model.parameters(), *head.parameters()], 1.0, NonFiniteCount(CUDA))
    augment = FinetuneAugment.from_config(preset.finetune)
    assert augment.hue > 0 and augment.rotation_degrees > 0
    step = ArcFaceStep(ArcFaceNet(model, head, 0.1), update, None, augment, BatchFeeder(CUDA),
                       super_resolver(dsr, runtime), runtime)
    images, generator = LabelledImages(train.vlr, train.labels), torch.Generator().manual_seed(0)
    step(images, torch.arange(4), generator)                       # first step: lazy optimiser state
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with no_sync_allowed():
        outs = [step(images, torch.arange(4) + k, generator) for k in range(1, 4)]
    assert all(bool(o.applied) and torch.isfinite(o.loss) for o in outs)
    assert _changed(before, model)


def test_an_fp16_dsr_step_with_its_grad_scaler_makes_no_synchronisation_at_all(demo_root):
    preset = _preset()
    runtime = Runtime(CUDA, torch.float16, channels_last=True)
    assert runtime.needs_grad_scaler
    train = load_split(demo_root, "train", preset.vlr_size, preset.data.hr_size).to(CUDA)
    criterion = build_criterion(preset.dsr, build_edgeface("edgeface_xxs"), CUDA)
    training = build_training(preset, runtime, criterion, BatchFeeder(CUDA), NonFiniteCount(CUDA),
                              warmup_steps=2, total_steps=20)
    assert training.scaler.is_enabled() and skips_on_device(training.optimizer)
    generator = torch.Generator().manual_seed(0)
    training.step(train, torch.arange(4), generator, 0)
    with no_sync_allowed():
        outs = [training.step(train, torch.arange(4) + k, generator, k) for k in range(1, 4)]
    assert all(torch.isfinite(o.loss) for o in outs)                 # (the scaler may skip its first steps)
    assert all(p.dtype == torch.float32 for p in training.model.parameters())   # fp32 master weights


# ----------------------------------------------------------------------------- the update on the device


def _linear(fused: bool = True) -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).to(CUDA)
    kwargs = fused_adamw_kwargs(CUDA) if fused else {"foreach": True}
    return model, torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, **kwargs)


def test_fused_adamw_skips_a_non_finite_step_on_the_device_without_a_sync():
    model, optimizer = _linear()
    assert fused_adamw_kwargs(CUDA) == {"fused": True} and skips_on_device(optimizer)
    count = NonFiniteCount(CUDA)
    update = OptimizerUpdate(optimizer, torch.amp.GradScaler("cuda", enabled=False), model.parameters(), 1.0, count)
    x = torch.rand(5, 4, device=CUDA)
    update(model(x).sum())                                          # lazy state, outside the check
    after_one = {k: v.clone() for k, v in model.state_dict().items()}
    with no_sync_allowed():
        skipped = [update(model(x).sum() * float("nan")) for _ in range(3)]
        applied = update(model(x).sum() * float("inf"))
    assert not any(bool(s) for s in skipped) and not bool(applied)
    assert all(torch.equal(after_one[k], v) for k, v in model.state_dict().items())
    assert float(optimizer.state[model.weight]["step"]) == 1.0      # the skipped steps did not count
    assert bool(update(model(x).sum() * 0.5)) and not torch.equal(after_one["weight"], model.weight)
    assert count.read() == (4, 4)


def test_fp16_grad_scaler_skips_an_overflow_and_lowers_its_scale():
    model, optimizer = _linear()
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    update = OptimizerUpdate(optimizer, scaler, model.parameters(), 1.0, NonFiniteCount(CUDA))
    x = torch.rand(5, 4, device=CUDA)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(x).sum()
    assert bool(update(loss))
    before, scale = {k: v.clone() for k, v in model.state_dict().items()}, scaler.get_scale()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(x).sum() * float("inf")
    assert not bool(update(loss))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scaler.get_scale() == scale / 2                           # the scaler's own back-off


def test_bf16_autocast_runs_the_convolutions_in_bf16_and_keeps_fp32_master_weights(demo_root):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16 (runtime.amp = auto picks fp16 with a GradScaler here)")
    preset = _preset()
    runtime = Runtime(CUDA, torch.bfloat16)
    train = load_split(demo_root, "train", preset.vlr_size, preset.data.hr_size).to(CUDA)
    criterion = build_criterion(preset.dsr, build_edgeface("edgeface_xxs"), CUDA)
    training = build_training(preset, runtime, criterion, BatchFeeder(CUDA), NonFiniteCount(CUDA),
                              warmup_steps=0, total_steps=10)
    dtypes = []
    conv = next(m for m in training.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    out = training.step(train, torch.arange(4), torch.Generator().manual_seed(0), 0)
    assert dtypes[-1] == torch.bfloat16 and bool(out.applied) and torch.isfinite(out.loss)
    assert not training.scaler.is_enabled()
    assert all(p.dtype == torch.float32 for p in training.model.parameters())


def test_channels_last_on_cuda_gives_the_contiguous_networks_outputs():
    torch.manual_seed(0)
    plain = DSRNet((16, 16), 128, 8, 1).to(CUDA)
    nhwc = DSRNet((16, 16), 128, 8, 1).to(CUDA)
    nhwc.load_state_dict(plain.state_dict())
    prepare_model(nhwc, Runtime(CUDA, None, channels_last=True))
    convs = [p for p in nhwc.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    x = torch.rand(2, 3, 16, 16, device=CUDA)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False                          # compare the layouts, not TF32 rounding
    try:
        with torch.no_grad():
            expected, out = plain(x), nhwc(x.contiguous(memory_format=torch.channels_last))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert torch.allclose(out, expected, atol=1e-4)


# ----------------------------------------------------------------------------- torch.compile


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 2)).to(CUDA)


@pytest.mark.timeout(300)
def test_compile_really_compiles_on_cuda_and_trains():
    model, x = _tiny(), torch.rand(2, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        expected = model(x)
    keys, messages = list(model.state_dict()), []
    assert compile_or_eager(model, messages.append, "tiny") is True
    out = model(x)
    assert messages == ["runtime.compile: tiny compiled"]
    assert torch.allclose(out, expected, atol=1e-2, rtol=1e-2)
    out.sum().backward()                                             # the compiled backward runs too
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert list(model.state_dict()) == keys


class _Breaks(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        torch._dynamo.graph_break()                                  # fullgraph=True cannot trace past this
        return x.relu()


@pytest.mark.timeout(300)
def test_compile_falls_back_to_eager_on_a_real_compiler_failure():
    import torch._dynamo  # noqa: F401 - graph_break is called eagerly first

    model, x = _Breaks().to(CUDA), torch.rand(2, 3, 8, 8, device=CUDA)
    with torch.no_grad():
        expected = model(x)
    messages = []
    assert compile_or_eager(model, messages.append, "DSR network", fullgraph=True) is True
    with torch.no_grad():
        out = model(x)
    assert len(messages) == 1 and messages[0].startswith("runtime.compile: DSR network falls back to eager: ")
    assert torch.equal(out, expected) and model._compiled_call_impl is None


# ----------------------------------------------------------------------------- cache placement


def _split(n: int = 24):
    from engine.data.pairs import PairedSplit

    names = [f"{i:03d}_x.png" for i in range(n)]
    return PairedSplit("train", None, names, [f"{i:03d}" for i in range(n)], [f"{i:03d}" for i in range(n)],
                       torch.arange(n), torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8),
                       torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8))


def test_the_cache_goes_to_the_device_when_the_measured_free_memory_allows():
    messages = []
    placed, where = place_splits([_split()], CUDA, job_bytes=MIB, log=messages.append)   # the real mem_get_info
    assert where == "device" and placed[0].hr.is_cuda and placed[0].vlr.is_cuda
    assert "data cache: on cuda" in messages[0] and "GiB free on cuda" in messages[0]


def test_a_cache_that_does_not_fit_stays_in_pinned_memory_and_every_batch_arrives_intact():
    split = _split()
    placed, where = place_splits([split], CUDA, job_bytes=MIB, free_bytes=lambda device: MIB)
    assert where == "pinned" and not placed[0].hr.is_cuda
    feeder = BatchFeeder(CUDA)
    indices = [torch.randperm(24)[:5] for _ in range(8)]
    outs = [feeder(placed[0].hr, index) for index in indices]       # buffers reused while copies are in flight
    torch.cuda.synchronize()
    assert all(out.is_cuda and torch.equal(out.cpu(), split.hr[index]) for out, index in zip(outs, indices))
    staging = [b for buffers in feeder._buffers.values() for b in buffers]
    assert len(staging) == BatchFeeder.SLOTS and all(b.is_pinned() for b in staging)


# ----------------------------------------------------------------------------- out of memory


def test_a_real_cuda_out_of_memory_becomes_the_guides_batch_advice(demo_root, tmp_path, monkeypatch):
    from engine.events import Failed
    from engine.jobs.registry import JobRequest, run_job
    from engine.runs.records import read_metrics

    total = torch.cuda.get_device_properties(CUDA).total_memory

    def exhausted(self, x):
        return torch.empty(2 * total, dtype=torch.uint8, device=x.device)   # the allocator's own OutOfMemoryError

    monkeypatch.setattr(DSRNet, "forward", exhausted)
    preset = _preset(tmp_path, **{"dsr.batch_size": 14, "dsr.epochs": 1, "dsr.lambda_identity": 0.0,
                                  "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0})
    result = run_job(JobRequest("train-dsr", preset, str(demo_root)), lambda event: None)
    assert isinstance(result, Failed) and result.traceback is None, result
    assert "out of memory" in result.error and "dsr.batch_size = 14" in result.error and "12" in result.error
    (run_dir,) = Path(preset.runtime.runs_dir).iterdir()
    errors = [r for r in read_metrics(run_dir) if r["split"] == "error"]
    assert len(errors) == 1 and "out of memory" in errors[0]["error"]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
    assert torch.cuda.memory_allocated(CUDA) < total // 4             # nothing of the failed job is held


def test_find_batch_backs_off_at_the_real_memory_limit_and_measures_a_real_step():
    from engine.jobs.batch_search import largest_batch, search
    from engine.runtime import resolve

    torch.cuda.empty_cache()
    quarter = torch.cuda.get_device_properties(CUDA).total_memory // 4

    def try_batch(n: int) -> None:
        torch.empty(n * quarter, dtype=torch.uint8, device=CUDA)     # 4 quarters never fit beside the context

    largest, tried = largest_batch(try_batch, 1, limit=16)
    assert 1 <= largest <= 3 and not tried.get(4, False)
    assert torch.cuda.memory_reserved(CUDA) < quarter               # emptied after the failed tries
    preset = _preset(**{"dsr.lambda_perceptual": 0.0})
    result = search(preset, resolve(preset), "train-dsr", limit=16)
    assert result.largest == 16 and result.peak_mb and result.peak_mb > 0


# ----------------------------------------------------------------------------- NCCL, one process


@pytest.mark.timeout(120)
def test_nccl_with_one_process(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from engine import distributed

    assert dist.is_nccl_available()
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        x = torch.arange(4.0, device=CUDA)
        dist.all_reduce(x)
        assert x.tolist() == [0.0, 1.0, 2.0, 3.0]
        # the engine's sums as under torchrun (a context that says "several ranks", over the one-process group)
        values = {"loss": torch.tensor(2.5, device=CUDA), "n": torch.tensor(4.0, device=CUDA)}
        sums = distributed.all_reduce_sums(values, distributed.Context(rank=0, world_size=2))
        assert {k: float(v) for k, v in sums.items()} == {"loss": 2.5, "n": 4.0}
        host = dist.new_group(backend="gloo")                        # the host-side group setup() makes
        flag = torch.tensor([1.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=host)
        model = DistributedDataParallel(torch.nn.Linear(4, 2).to(CUDA), device_ids=[0])
        model(torch.rand(3, 4, device=CUDA)).sum().backward()         # gradients all-reduced over NCCL
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- the GPU panel


def test_the_gpu_panel_reads_the_real_device_through_nvitop():
    from workbench.app.gpu_probe import GpuProbe

    block = torch.empty(64 * MIB, dtype=torch.uint8, device=CUDA)   # CUDA initialised: torch's memory is read too
    snapshot = GpuProbe().read()
    assert snapshot.available, snapshot.reason
    props = torch.cuda.get_device_properties(CUDA)
    mine = [r for r in snapshot.devices if r.allocated_mib is not None]
    assert len(mine) == 1, snapshot                                  # torch's device found by its PCI bus id
    reading = mine[0]
    assert props.name in reading.name or reading.name in props.name
    assert reading.allocated_mib >= 64 and reading.reserved_mib >= reading.allocated_mib
    assert reading.memory_total_mib == pytest.approx(props.total_memory / MIB, rel=0.05)
    assert reading.memory_used_mib and reading.memory_used_mib > 0 and reading.memory_fraction < 1
    assert reading.utilization is not None and reading.temperature_c is not None
    del block
