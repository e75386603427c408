"""Step levers on the CPU: bf16 autocast and channels_last training steps (DSR and fine-tuning), and
torch.compile compiling or falling back to eager with its logged reason."""

from __future__ import annotations

import pytest
import torch

from engine import runtime as rt
from engine.data.augment import FinetuneAugment, PairedAugment
from engine.losses.combined import build_criterion
from engine.models.arcface import ArcFaceHead, arcface_loss
from engine.models.dsr import DSRNet
from engine.models.edgeface import EMBEDDING_DIM, build_edgeface, prepare_input, resize_for_recogniser
from engine.presets import load
from engine.runtime import Runtime, compile_or_eager, fused_adamw_kwargs, prepare_model, resolve

CPU = torch.device("cpu")
LEVERS = [pytest.param(Runtime(CPU, torch.bfloat16), id="bf16"),
          pytest.param(Runtime(CPU, None, channels_last=True), id="channels_last"),
          pytest.param(Runtime(CPU, torch.bfloat16, channels_last=True), id="bf16+channels_last")]


def test_resolve_reads_the_levers_and_picks_bf16_on_the_cpu_only_where_it_is_native(monkeypatch):
    import engine.runtime as runtime_module

    preset = load("cpu-demo").with_changes({"runtime.device": "cpu", "runtime.channels_last": False})
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: False)
    assert resolve(preset) == Runtime(CPU, None)                 # emulated bf16 is slower: full precision
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: True)
    assert resolve(preset) == Runtime(CPU, torch.bfloat16)       # native bf16: 2x on the DSR step
    assert resolve(preset.with_changes({"runtime.amp": "off"})).amp_dtype is None
    tuned = preset.with_changes({"runtime.amp": "bf16", "runtime.channels_last": True, "runtime.compile": True})
    assert resolve(tuned) == Runtime(CPU, torch.bfloat16, channels_last=True, compile=True)
    assert resolve(preset.with_changes({"runtime.amp": "fp16"})).amp_dtype is None  # fp16 autocast: CUDA only
    assert fused_adamw_kwargs("cpu") == {"fused": True} and fused_adamw_kwargs("cuda") == {"fused": True}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


@pytest.mark.parametrize("runtime", LEVERS)
def test_dsr_training_step_with_the_lever(runtime):
    torch.manual_seed(0)
    cfg = load("cpu-demo").dsr  # every loss term: L1, TV, identity, feature matching, EdgeFace perceptual
    criterion = build_criterion(cfg, build_edgeface("edgeface_xxs"), CPU)
    model = prepare_model(DSRNet((16, 16), 128, 8, 1), runtime)
    prepare_model(criterion, runtime)
    if runtime.channels_last:
        convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                             for p in convs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **fused_adamw_kwargs(CPU))
    augment, generator = PairedAugment.from_config(cfg), torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vlr, hr = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 128, 128)
    conv_dtypes = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: conv_dtypes.append(out.dtype))
    for _ in range(2):
        v, h = augment(vlr, hr, generator)
        v, h = v.contiguous(memory_format=runtime.memory_format), h.contiguous(memory_format=runtime.memory_format)
        with runtime.autocast():
            sr = model(v)
            loss, terms = criterion(sr, h)
        assert conv_dtypes[-1] == (runtime.amp_dtype or torch.float32)  # the convolutions ran in bf16
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        assert torch.isfinite(loss) and set(terms) >= {"l1", "identity", "feature_match", "perceptual"}
    assert _changed(before, model)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights


@pytest.mark.parametrize("runtime", LEVERS)
def test_finetune_step_with_the_lever(runtime):
    torch.manual_seed(0)
    model = prepare_model(build_edgeface("edgeface_xxs"), runtime)
    head = ArcFaceHead(EMBEDDING_DIM, 5)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3, **fused_adamw_kwargs(CPU))
    augment = FinetuneAugment(0.5, 0.1, 0.1, 0.1, 0.02, 5.0)
    generator = torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.rand(4, 3, 128, 128), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        x = augment(resize_for_recogniser(images), generator)
        with runtime.autocast():
            embeddings = model(prepare_input(x).contiguous(memory_format=runtime.memory_format))
        assert embeddings.dtype == (runtime.amp_dtype or torch.float32)
        cos = head.cosine(embeddings)
        loss = arcface_loss(head.margin_logits(cos, labels), labels, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
    assert _changed(before, model)


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 2))


def test_compile_failure_falls_back_to_eager_with_its_reason(monkeypatch):
    calls = []

    def broken_compile(fn, **options):
        def compiled(*args, **kwargs):
            calls.append(1)
            raise RuntimeError("inductor: no kernel for this op\nlong traceback...")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model, x = _tiny(), torch.rand(2, 3, 8, 8)
    expected = model(x)
    keys = list(model.state_dict())
    messages = []
    assert compile_or_eager(model, messages.append, "DSR network") is True
    out = model(x)
    assert torch.equal(out, expected) and calls == [1]
    assert messages == ["runtime.compile: DSR network falls back to eager: RuntimeError: inductor: no kernel for "
                        "this op"]
    out.sum().backward()  # the eager result trains
    model(x)
    assert calls == [1] and list(model.state_dict()) == keys  # no second try; checkpoints keep their keys


def test_a_deep_copy_of_a_compiled_model_runs_its_own_weights(monkeypatch):
    """timm's EMA deep-copies the model: the copy must not call the original's compiled graph."""
    import copy

    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)  # "compiled" = the original's own call
    model, x = _tiny(), torch.rand(2, 3, 8, 8)
    compile_or_eager(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    assert twin._compiled_call_impl is None and torch.count_nonzero(twin(x)) == 0
    assert torch.count_nonzero(model(x)) > 0


def test_compile_ruled_out_without_a_compiler(monkeypatch):
    monkeypatch.setattr(rt.shutil, "which", lambda name: None)
    messages = []
    model = _tiny()
    assert prepare_model(model, Runtime(CPU, None, compile=True), messages.append, "frozen recogniser") is model
    assert messages == ["runtime.compile: frozen recogniser runs eagerly: no C++ compiler on PATH (inductor "
                        "builds CPU kernels with one)"]
    assert model._compiled_call_impl is None


@pytest.mark.skipif(rt.compile_unavailable_reason("cpu") is not None, reason="torch.compile cannot run here")
def test_compile_really_compiles_a_tiny_model_on_the_cpu():
    model, x = _tiny(), torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        messages = []
        compile_or_eager(model, messages.append, "tiny")
        out = model(x)
    assert messages == ["runtime.compile: tiny compiled"]
    assert torch.allclose(out, expected, atol=1e-5) and list(model.state_dict()) == ["0.weight", "0.bias",
                                                                                     "3.weight", "3.bias"]
