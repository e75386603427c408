"""Everything a GPU can tell us about the workbench, in one command (issue 23), for the first device lent.

    python benchmarks/gpu_check.py --out DIR [--dry] [--only PART,...] [--limit PART=SECONDS ...] [--budget S]

Parts, in this order, each in its own process with its own time limit (a slow or hung part is killed with
everything it started, and the next one runs):

  machine        GPU name, memory, driver, CUDA/cuDNN/NCCL/torch versions, bf16 support, the bf16 peak
  bench_guide    benchmarks/bench_train.py on vlr-32x32 (the guide's batch 14 / 28): engine img/s against
                 the straightforward baseline, peak memory against the guide's 7.2 GB, FLOPs, share of the
                 device's bf16 peak
  cuda_tests     `pytest -m gpu` (tests marked gpu: sync-free steps, fused AdamW, bf16/fp16, channels_last,
                 compile, cache placement, OOM advice, NCCL, the GPU panel): passed/failed/skipped
  find_batch     the engine's find-batch search (engine.jobs.batch_search.search) for train-dsr and finetune
  bench_largest  bench_train.py at the batches find_batch found (the engine alone: the fp32 baseline would not
                 fit beside it; once more at 85% when the found batch runs out of memory in a real step)
  pipeline       `vlr-workbench demo-data` (32x32) and a short `vlr-workbench pipeline` on CUDA: its eval.json
  bench_compile  bench_train.py's DSR step with runtime.compile = true, against bench_guide's eager rate
  projection     hours of the guide's full run (111,568 images, 100 DSR + 25 fine-tuning epochs) at the
                 measured rates, beside the guide's 10-14 h + 12-15 h (arithmetic, refreshed after each part)

``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` are rewritten atomically after every part, so a run cut
short keeps the figures so far; every section has ``status`` (ok, failed, timed_out, skipped; pending and
running before it ends), ``seconds``, ``limit_s``, ``figures`` and, when it failed or timed out,
``output_tail``. Each part's whole output is in ``DIR/logs/PART.log``. The limits add up to under 8 minutes (``--budget``, default 470 s):
a part never gets more than the budget has left.

``--dry`` runs the same parts on a CPU at tiny sizes in seconds (CI keeps the script working): every
figure is marked ``"dry_run": true`` and means nothing about speed. Without CUDA and without ``--dry`` the
machine part records why, and the command stops (exit 2). Exit 1 when a part failed or timed out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GUIDE = {"images": 111_568, "dsr_epochs": 100, "finetune_epochs": 25, "dsr_hours": [10, 14],
         "finetune_hours": [12, 15], "dsr_batch": 14, "finetune_batch": 28, "dsr_peak_gb": 7.2}
# (name, limit on a GPU in seconds, limit in the dry run); run in this order
PARTS = (("machine", 20, 60), ("bench_guide", 70, 90), ("cuda_tests", 90, 120), ("find_batch", 45, 60),
         ("bench_largest", 55, 90), ("pipeline", 70, 90), ("bench_compile", 120, 90))
SECTIONS = [name for name, _, _ in PARTS] + ["projection"]
BUDGET_S = 470            # the GPU limits add up to this: under 8 minutes with the parts' start-up
MIN_PART_S = 10           # a part that would get less than this of the budget is skipped
TAIL_CHARS = 3000
HANG_ENV = "GPU_CHECK_TEST_HANG"   # test hook: the named part hangs (with a child process) until killed
KINDS = {"dsr": "train-dsr", "finetune": "finetune"}   # bench_train's step kinds and find-batch's jobs
TINY = {"dsr.base_channels": 8, "dsr.residual_blocks": 1, "dsr.batch_size": 4, "finetune.batch_size": 4,
        "data.demo_identities": 8, "data.demo_per_identity": 4, "runtime.edgeface_variant": "edgeface_xxs"}


class UserError(Exception):
    """Bad input: one message, exit 2."""


# ----------------------------------------------------------------------------- the parts (each in its own process)


@dataclass
class PartContext:
    name: str
    dry: bool
    work: Path            # scratch space shared by the parts of one check (removed at the end)
    out: Path

    def result_file(self, name: str | None = None) -> Path:
        return self.work / "results" / f"{name or self.name}.json"

    def previous(self, name: str) -> dict[str, Any] | None:
        """The result of an earlier part (None when it did not finish)."""
        path = self.result_file(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, status: str, figures: dict[str, Any], note: str = "") -> None:
        """This part's result; also called midway ("partial") so that a part cut short keeps what it measured."""
        from engine.io import atomic

        atomic.write_json(self.result_file(), {"status": status, "figures": {**figures, "dry_run": self.dry},
                                               "note": note})

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A command whose output is kept and copied into this part's log as it comes (so that a part killed
        at its limit shows where it was)."""
        print("$", " ".join(cmd), flush=True)
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   text=True, errors="replace", cwd=REPO, env={**os.environ, **(env or {})})
        kept: dict[str, list[str]] = {"stdout": [], "stderr": []}
        lock = threading.Lock()

        def pump(stream, key: str) -> None:
            for line in stream:
                kept[key].append(line)
                with lock:
                    sys.stdout.write(line)
                    sys.stdout.flush()

        pumps = [threading.Thread(target=pump, args=(getattr(process, key), key), daemon=True) for key in kept]
        for thread in pumps:
            thread.start()
        code = process.wait()
        for thread in pumps:
            thread.join(timeout=30)   # a grandchild still holding the pipe must not hold the part
        return subprocess.CompletedProcess(cmd, code, "".join(kept["stdout"]), "".join(kept["stderr"]))


def _bench_cmd(ctx: PartContext, sets: dict[str, Any], *extra: str) -> list[str]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--no-app", "--json"]
    if ctx.dry:
        cmd += ["--preset", "cpu-demo", "--steps", "2", "--warmup", "1", "--rounds", "1", "--workers", "0"]
        sets = {**TINY, "runtime.device": "cpu", **sets}
    else:
        cmd += ["--preset", "vlr-32x32"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd + list(extra)


def _bench(ctx: PartContext, sets: dict[str, Any], *extra: str, env: dict[str, str] | None = None):
    """(bench_train's JSON report or None, its stderr)."""
    done = ctx.run(_bench_cmd(ctx, sets, *extra), env)
    if done.returncode != 0:
        return None, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _with_derived(report: dict[str, Any], guide_batch: bool = False) -> dict[str, Any]:
    """bench_train's report plus achieved TFLOP/s and peak GB; at the guide's batch, the DSR peak against the
    guide's 7.2 GB."""
    for name in ("dsr", "finetune"):
        kind = report.get(name)
        if kind and kind.get("flops_per_image"):
            kind["engine_tflops"] = round(kind["flops_per_image"] * kind["engine_img_s"] / 1e12, 2)
        if kind:
            kind["engine_peak_gb"] = round(kind["engine_peak_mb"] * 2**20 / 1e9, 2)
    if guide_batch and "dsr" in report:
        peak_gb = report["dsr"]["engine_peak_gb"]
        report["dsr"].update(guide_peak_gb=GUIDE["dsr_peak_gb"], peak_vs_guide=round(peak_gb / GUIDE["dsr_peak_gb"], 3))
    return report


def part_machine(ctx: PartContext) -> None:
    import torch

    from engine.runtime import cpu_has_native_bf16

    figures: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "cpu": _cpu_name(),
                               "cpu_cores": os.cpu_count(), "memory_gb": _memory_gb(),
                               "cuda_available": torch.cuda.is_available()}
    if not torch.cuda.is_available():
        figures.update(cpu_native_bf16=cpu_has_native_bf16(), cuda_built=torch.version.cuda,
                       nvidia_smi=_nvidia_smi(["-L"]))
        ctx.save("ok", figures, "no CUDA device: CPU figures only")
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_train import peak_bf16_flops

    props = torch.cuda.get_device_properties(0)
    nccl = torch.cuda.nccl.version() if hasattr(torch.cuda, "nccl") else None
    peak = peak_bf16_flops(props.name)
    figures.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                   gpu_memory_gb=round(props.total_memory / 1e9, 1),
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count,
                   driver=_driver_version(), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
                   bf16_supported=torch.cuda.is_bf16_supported(), peak_bf16_tflops=peak / 1e12 if peak else None,
                   triton=_version_of("triton"), nvitop=_version_of("nvitop"))
    ctx.save("ok", figures)


def part_bench_guide(ctx: PartContext) -> None:
    report, stderr = _bench(ctx, {})
    if report is None:
        raise SystemExit(f"bench_train.py failed:\n{stderr[-TAIL_CHARS:]}")
    ctx.save("ok", _with_derived(report, guide_batch=True))


def part_cuda_tests(ctx: PartContext) -> None:
    import importlib.util

    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8"))
    junit = ctx.out / "logs" / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *files]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += ["--timeout", "300"]
    done = ctx.run(cmd)
    figures = {"files": files, "exit_code": done.returncode, **_junit_counts(junit)}
    status = "ok" if done.returncode == 0 else "failed"
    ctx.save(status, figures, "" if status == "ok" else f"pytest exit code {done.returncode}")


def part_find_batch(ctx: PartContext) -> None:
    from engine import presets
    from engine.jobs.batch_search import dsr_step, finetune_step, largest_batch, search
    from engine.runtime import resolve

    figures: dict[str, Any] = {}
    for job, key in (("train-dsr", "dsr.batch_size"), ("finetune", "finetune.batch_size")):
        if ctx.dry:   # the CPU never runs out of memory: real steps of the tiny networks up to a limit of 4
            preset = presets.load("cpu-demo").with_changes({**TINY, "runtime.device": "cpu"})
            runtime = resolve(preset)
            step = dsr_step(preset, runtime) if job == "train-dsr" else finetune_step(preset, runtime, classes=10)
            largest, tried = largest_batch(step, 2, limit=4)
            peak = None
        else:
            preset = presets.load("vlr-32x32").with_changes({"dsr.vgg19_weights": _vgg19_file(ctx)})
            found = search(preset, resolve(preset), job, limit=512)
            largest, tried, peak = found.largest, found.tried, found.peak_mb
        figures[job] = {"key": key, "largest": largest, "tried": {str(n): ok for n, ok in sorted(tried.items())},
                        "peak_mb": round(peak, 1) if peak else None, "limit": 4 if ctx.dry else 512}
        ctx.save("partial", figures)
    ctx.save("ok", figures)


def part_bench_largest(ctx: PartContext) -> None:
    found = (ctx.previous("find_batch") or {}).get("figures", {})
    batches = {kind: (found.get(job) or {}).get("largest") or 0 for kind, job in KINDS.items()}
    batches = {kind: n for kind, n in batches.items() if n}
    if not batches:
        ctx.save("skipped", {}, "find_batch found no batch")
        return
    figures: dict[str, Any] = {"found": dict(batches)}
    only = [] if len(batches) == len(KINDS) else ["--only", *batches]     # the kind find_batch measured
    per = 4 if ctx.dry else 12
    extra = ("--steps", "2", "--warmup", "1") if ctx.dry else ("--steps", "12", "--warmup", "2", "--rounds", "2")
    for attempt in range(2):
        identities = max(8 if ctx.dry else 60, math.ceil(1.3 * max(batches.values()) / (0.6 * per)))
        sets = {**{f"{kind}.batch_size": n for kind, n in batches.items()}, "data.demo_identities": identities,
                "data.demo_per_identity": per}
        report, stderr = _bench(ctx, sets, "--no-baseline", *only, *extra)
        if report is not None:
            figures.update(_with_derived(report), batches=dict(batches))
            ctx.save("ok", figures)
            return
        if attempt or "out of memory" not in stderr.lower():
            raise SystemExit(f"bench_train.py failed:\n{stderr[-TAIL_CHARS:]}")
        figures["oom_at_found_batch"] = True     # find-batch's largest did not fit a real step: 85% of it
        batches = {kind: max(1, int(n * 0.85)) for kind, n in batches.items()}


def part_pipeline(ctx: PartContext) -> None:
    from engine import presets

    data, run_dir = ctx.work / "pipeline-data", ctx.work / "pipeline-run"
    cli = [sys.executable, "-m", "workbench.cli.main"]
    sizes = ["--identities", "8", "--per-identity", "4"] if ctx.dry else ["--identities", "40", "--per-identity", "8"]
    done = ctx.run([*cli, "demo-data", str(data), *sizes, "--vlr", "32x32"])
    if done.returncode != 0:
        raise SystemExit(f"demo-data failed:\n{done.stderr[-TAIL_CHARS:]}")
    short = {"dsr.epochs": 1 if ctx.dry else 2, "dsr.warmup_epochs": 0, "finetune.stage1_epochs": 1,
             "finetune.stage2_epochs": 1 if ctx.dry else 2, "finetune.pretrain_epochs": 1 if ctx.dry else 2,
             "runtime.runs_dir": str(ctx.work / "runs")}
    if ctx.dry:
        preset = presets.load("cpu-demo").with_changes({**TINY, **short, "runtime.device": "cpu", "data.vlr_width": 32,
                                                        "data.vlr_height": 32})
    else:
        preset = presets.load("vlr-32x32").with_changes({**short, "runtime.device": "cuda",
                                                         "dsr.vgg19_weights": _vgg19_file(ctx)})
    preset_file = presets.save(preset, ctx.work / "pipeline.toml", overwrite=True)
    figures: dict[str, Any] = {"preset": {"derived_from": "cpu-demo" if ctx.dry else "vlr-32x32", **short}}
    ctx.save("partial", figures)
    done = ctx.run([*cli, "pipeline", "--preset", str(preset_file), "--data", str(data), "--bootstrap",
                    "20" if ctx.dry else "200", "--run-dir", str(run_dir)])
    if done.returncode != 0:
        raise SystemExit(f"pipeline failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-TAIL_CHARS:]}")
    figures.update(_pipeline_figures(run_dir, ctx.out))
    ctx.save("ok", figures)


def part_bench_compile(ctx: PartContext) -> None:
    # the dry run cannot afford inductor's minutes on a CPU: dynamo is switched off, so only the path runs
    env = {"TORCHDYNAMO_DISABLE": "1"} if ctx.dry else None
    extra = ("--steps", "2", "--warmup", "1") if ctx.dry else ("--steps", "12", "--warmup", "3", "--rounds", "2")
    report, stderr = _bench(ctx, {"runtime.compile": "true"}, "--only", "dsr", "--no-baseline", *extra, env=env)
    if report is None:
        raise SystemExit(f"bench_train.py failed:\n{stderr[-TAIL_CHARS:]}")
    figures = _with_derived(report)
    figures["compile_log"] = [line.strip() for line in stderr.splitlines() if "runtime.compile:" in line][:10]
    eager = ((ctx.previous("bench_guide") or {}).get("figures") or {}).get("dsr", {}).get("engine_img_s")
    if eager:
        figures["dsr"]["eager_img_s"] = eager
        figures["dsr"]["speedup_vs_eager"] = round(figures["dsr"]["engine_img_s"] / eager, 3)
    if ctx.dry:
        figures["compile_disabled"] = "TORCHDYNAMO_DISABLE=1 in the dry run"
    ctx.save("ok", figures)


PART_FUNCTIONS: dict[str, Callable[[PartContext], None]] = {
    "machine": part_machine, "bench_guide": part_bench_guide, "cuda_tests": part_cuda_tests,
    "find_batch": part_find_batch, "bench_largest": part_bench_largest, "pipeline": part_pipeline,
    "bench_compile": part_bench_compile}


# ----------------------------------------------------------------------------- helpers of the parts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_smi(args: list[str]) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip()[:500] or None


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001 - no NVML: ask nvidia-smi
        line = _nvidia_smi(["--query-gpu=driver_version", "--format=csv,noheader"])
        return line.splitlines()[0] if line else None


def _version_of(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _junit_counts(path: Path) -> dict[str, Any]:
    """passed/failed/skipped counts and each test's outcome from pytest's JUnit XML."""
    if not path.is_file():
        return {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "tests": {}}
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "errors"}.get(tag, tag)
                messages[name] = (child.get("message") or "")[:300]
                break
        outcomes[name] = outcome
    counts = {key: sum(1 for o in outcomes.values() if o == key) for key in ("passed", "failed", "errors", "skipped")}
    problems = {n: m for n, m in messages.items() if outcomes[n] in ("failed", "errors")}
    return {**counts, "tests": outcomes, "problems": problems}


def _vgg19_file(ctx: PartContext) -> str:
    """torchvision's VGG19 file when it is where the perceptual loss looks (same cost as trained weights);
    else a random-init one written once into the scratch space (nothing is downloaded)."""
    from engine.losses.perceptual import vgg19_weights_path

    if vgg19_weights_path("").is_file():
        return ""
    path = ctx.work / "vgg19-random.pth"
    if not path.is_file():
        import torchvision

        from engine.io import atomic

        atomic.torch_save(path, torchvision.models.vgg19(weights=None).state_dict())
    return str(path)


def _pipeline_figures(run_dir: Path, out: Path) -> dict[str, Any]:
    """Stage times and rates from the pipeline's summary.json, and the headline rows of its eval.json."""
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = {}
    for name, path in (summary.get("stage_runs") or {}).items():
        stage_file = Path(path) / "summary.json"
        stage = json.loads(stage_file.read_text()) if stage_file.is_file() else {}
        stages[name] = {k: stage.get(k) for k in ("images_per_second", "peak_device_memory_mb", "epochs_run",
                                                   "skipped_steps", "best_val_psnr", "bicubic_val_psnr")
                        if stage.get(k) is not None}
    evaluation = json.loads(Path(summary["eval_json"]).read_text())
    shutil.copyfile(summary["eval_json"], out / "pipeline_eval.json")
    rows = {row: {k: values.get(k) for k in ("rank1", "rank5", "eer", "auc", "psnr", "ssim")}
            for row, values in evaluation.items() if isinstance(values, dict) and "rank1" in values}
    return {"total_seconds": summary.get("total_seconds"), "stage_seconds": summary.get("stage_seconds"),
            "stages": stages, "eval": rows, "eval_json": "pipeline_eval.json"}


def _hang(ctx: PartContext) -> None:
    """Test hook: start a child that would outlive us, note its pid, and wait forever (the limit must end both)."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (ctx.out / "logs" / f"{ctx.name}.hang.pid").write_text(str(sleeper.pid))
    print("hanging on purpose", flush=True)
    time.sleep(600)


def run_part_here(name: str, dry: bool, work: Path, out: Path) -> int:
    ctx = PartContext(name, dry, work, out)
    if os.environ.get(HANG_ENV) == name:
        _hang(ctx)
    PART_FUNCTIONS[name](ctx)
    return 0


# ----------------------------------------------------------------------------- the driver


@dataclass
class Check:
    out: Path
    dry: bool
    limits: dict[str, float]
    selected: list[str]
    budget: float
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu-check-")))
    started: float = field(default_factory=time.monotonic)
    report: dict[str, Any] = field(default_factory=dict)
    final: bool = False   # every part has run: a projection without any rate is "skipped", not "pending"

    def __post_init__(self) -> None:
        self.report = {"dry_run": self.dry, "started": _now(), "updated": None, "elapsed_s": 0.0,
                       "budget_s": self.budget, "command": " ".join(sys.argv),
                       "sections": {name: {"status": "pending", "seconds": None, "limit_s": self.limits.get(name),
                                           "figures": {}, "dry_run": self.dry} for name in SECTIONS}}

    def write(self) -> None:
        from engine.io import atomic

        self.report["updated"] = _now()
        self.report["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.report["sections"]["projection"] = projection(self.report["sections"], self.dry, final=self.final)
        atomic.write_json(self.out / "gpu_check.json", self.report)
        atomic.write_text(self.out / "gpu_check.md", markdown(self.report))

    def set(self, name: str, **fields: Any) -> None:
        self.report["sections"][name].update(fields)
        self.write()

    def run(self) -> int:
        for name, _, _ in PARTS:
            if name not in self.selected:
                self.set(name, status="skipped", note="not selected (--only)")
                continue
            left = self.budget - (time.monotonic() - self.started)
            if left < MIN_PART_S:
                self.set(name, status="skipped", note=f"no time left in the {self.budget:.0f} s budget")
                continue
            self.set(name, status="running")
            self.set(name, **self.run_part(name, min(self.limits[name], left)))
            if name == "machine" and not self.dry and self.no_cuda():
                return self.stop_without_cuda()
        self.final = True
        self.write()
        bad = [n for n, s in self.report["sections"].items() if s["status"] in ("failed", "timed_out")]
        return 1 if bad else 0

    def run_part(self, name: str, limit: float) -> dict[str, Any]:
        log = self.out / "logs" / f"{name}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--work", str(self.work),
               "--out", str(self.out)] + (["--dry"] if self.dry else [])
        start = time.monotonic()
        with open(log, "w", encoding="utf-8") as sink:
            process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=REPO, env=self.env(), start_new_session=True)
            try:
                code, timed_out = process.wait(timeout=limit), False
            except subprocess.TimeoutExpired:
                code, timed_out = None, True
            finally:
                _kill_group(process)
        seconds = round(time.monotonic() - start, 1)
        result_file = self.work / "results" / f"{name}.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else {}
        status = "timed_out" if timed_out else "failed" if code != 0 else result.get("status", "failed")
        section = {"status": status, "seconds": seconds, "limit_s": round(limit, 1),
                   "figures": result.get("figures") or {"dry_run": self.dry}, "log": f"logs/{name}.log"}
        if result.get("note"):
            section["note"] = result["note"]
        if timed_out:
            section["note"] = f"stopped after its {limit:.0f} s limit" + (" (figures so far kept)" if result else "")
        if status in ("failed", "timed_out"):
            section["output_tail"] = log.read_text(encoding="utf-8", errors="replace")[-TAIL_CHARS:]
        return section

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", VLR_WORKBENCH_CACHE_DIR=str(self.work / "cache"),
                   VLR_WORKBENCH_CONFIG_DIR=str(self.work / "config"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        if self.dry:
            env["CUDA_VISIBLE_DEVICES"] = ""      # the dry run is the CPU run, on any machine
        return env

    def no_cuda(self) -> bool:
        machine = self.report["sections"]["machine"]
        return machine["status"] == "ok" and machine["figures"].get("cuda_available") is False

    def stop_without_cuda(self) -> int:
        for name in SECTIONS[1:-1]:             # the projection says "skipped" itself: no rate was measured
            self.report["sections"][name].update(status="skipped", note="no CUDA device (--dry runs on a CPU)")
        self.final = True
        self.write()
        print(f"gpu_check: no CUDA device here ({self.out / 'gpu_check.json'} holds the machine's figures); "
              "run with --dry for the CPU dry run", file=sys.stderr)
        return 2


def _kill_group(process: subprocess.Popen) -> None:
    """End a part and everything it started (DataLoader workers, pytest, the CLI's jobs)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- projection and Markdown


def _rates(sections: dict[str, Any]) -> dict[str, dict[str, float]]:
    """(label -> {"dsr": img/s, "finetune": img/s}) from the bench parts that measured something."""
    def rate(name: str, kind: str) -> float | None:
        section = sections.get(name) or {}
        return ((section.get("figures") or {}).get(kind) or {}).get("engine_img_s")

    guide_finetune, compiled = rate("bench_guide", "finetune"), rate("bench_compile", "dsr")
    rows = {"guide batch, eager": (rate("bench_guide", "dsr"), guide_finetune),
            "largest batch, eager": (rate("bench_largest", "dsr"), rate("bench_largest", "finetune")),
            "guide batch, DSR compiled": (compiled, guide_finetune if compiled else None)}   # fine-tuning eager
    return {label: {"dsr": dsr, "finetune": finetune} for label, (dsr, finetune) in rows.items() if dsr or finetune}


def projection(sections: dict[str, Any], dry: bool, final: bool) -> dict[str, Any]:
    """Hours of the guide's full run at each measured rate (training steps only: a lower bound)."""
    images = GUIDE["images"]
    at = {}
    for label, rates in _rates(sections).items():
        row: dict[str, Any] = {}
        for kind, epochs in (("dsr", GUIDE["dsr_epochs"]), ("finetune", GUIDE["finetune_epochs"])):
            if rates[kind]:
                row[f"{kind}_img_s"] = rates[kind]
                row[f"{kind}_hours"] = round(images * epochs / rates[kind] / 3600, 2)
        if "dsr_hours" in row and "finetune_hours" in row:
            row["total_hours"] = round(row["dsr_hours"] + row["finetune_hours"], 2)
        at[label] = row
    figures = {"images": images, "dsr_epochs": GUIDE["dsr_epochs"], "finetune_epochs": GUIDE["finetune_epochs"],
               "guide_dsr_hours": GUIDE["dsr_hours"], "guide_finetune_hours": GUIDE["finetune_hours"], "at": at,
               "dry_run": dry}
    status = "ok" if at else ("skipped" if final else "pending")
    return {"status": status, "seconds": 0.0, "limit_s": None, "figures": figures, "dry_run": dry,
            "note": "training steps at the benchmarked rate (validation, checkpoints and start-up not counted)"
                    + (" (no rate was measured)" if not at and final else "")}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def _bench_line(f: dict[str, Any]) -> str:
    parts = []
    for kind, label in (("dsr", "DSR"), ("finetune", "fine-tune")):
        r = f.get(kind)
        if not r:
            continue
        text = f"{label} {_fmt(r.get('engine_img_s'))} img/s"
        if r.get("ratio"):
            text += f" ({_fmt(r['ratio'], 2)}x the baseline's {_fmt(r.get('baseline_img_s'))})"
        if r.get("speedup_vs_eager"):
            text += f" ({_fmt(r['speedup_vs_eager'], 2)}x eager)"
        text += f", peak {_fmt(r.get('engine_peak_gb'), 2)} GB"
        if r.get("guide_peak_gb"):
            text += f" (guide {r['guide_peak_gb']} GB)"
        if r.get("engine_fraction_of_peak") is not None:
            text += f", {_fmt(100 * r['engine_fraction_of_peak'])}% of bf16 peak"
        parts.append(text)
    batch = f"batch {f.get('dsr_batch')}/{f.get('finetune_batch')}: " if "dsr_batch" in f else ""
    return batch + "; ".join(parts)


def summary_line(name: str, section: dict[str, Any]) -> str:
    """One line of figures for the Markdown table."""
    f = section.get("figures") or {}
    if name == "machine":
        if f.get("gpu"):
            return (f"{f['gpu']}, {f.get('gpu_memory_gb')} GB, driver {f.get('driver')}, CUDA {f.get('cuda')}, cuDNN "
                    f"{f.get('cudnn')}, NCCL {f.get('nccl')}, torch {f.get('torch')}, bf16 {f.get('bf16_supported')}")
        return f"CPU {f.get('cpu', '-')} ({f.get('cpu_cores', '-')} cores), torch {f.get('torch', '-')}, no CUDA"
    if name == "cuda_tests":
        return (f"{f.get('passed', 0)} passed, {f.get('failed', 0)} failed, {f.get('errors', 0)} errors, "
                f"{f.get('skipped', 0)} skipped" if "passed" in f else "")
    if name == "find_batch":
        return ", ".join(f"{job} {(f[job] or {}).get('largest')}" for job in ("train-dsr", "finetune") if f.get(job))
    if name.startswith("bench_"):
        return _bench_line(f)
    if name == "pipeline":
        rows = f.get("eval") or {}
        return ", ".join(f"{row} rank-1 {_fmt(100 * v['rank1'])}%" for row, v in rows.items()
                         if v.get("rank1") is not None)
    if name == "projection":
        return "; ".join(f"{label}: {_fmt(r.get('dsr_hours'), 2)} h + {_fmt(r.get('finetune_hours'), 2)} h"
                         for label, r in (f.get("at") or {}).items())
    return ""


def markdown(report: dict[str, Any]) -> str:
    sections = report["sections"]
    machine = sections["machine"]["figures"]
    where = machine.get("gpu") or "CPU"
    lines = [f"# GPU check: {where}" + (" (dry run on a CPU: tiny sizes, the figures mean nothing)"
                                       if report["dry_run"] else ""), "",
             f"Started {report['started']}, updated {report['updated']}, {report['elapsed_s']} s of the "
             f"{report['budget_s']:.0f} s budget.", "", "| part | status | seconds | figures |",
             "| --- | --- | --- | --- |"]
    for name, section in sections.items():
        status = section["status"].replace("_", " ")
        lines.append(f"| {name} | {status} | {_fmt(section.get('seconds'))} | "
                     f"{summary_line(name, section).replace('|', '/')} |")
    lines += ["", f"Guide: DSR {GUIDE['dsr_hours'][0]}-{GUIDE['dsr_hours'][1]} h + fine-tuning "
                  f"{GUIDE['finetune_hours'][0]}-{GUIDE['finetune_hours'][1]} h for {GUIDE['images']:,} images, "
                  f"{GUIDE['dsr_epochs']} + {GUIDE['finetune_epochs']} epochs."]
    for name, section in sections.items():
        if section.get("output_tail"):
            lines += ["", f"## {name}: {section['status'].replace('_', ' ')}", "", "```",
                      section["output_tail"][-1500:].strip(), "```"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line


def _limits(items: list[str], dry: bool) -> dict[str, float]:
    limits = {name: float(dry_limit if dry else gpu_limit) for name, gpu_limit, dry_limit in PARTS}
    for item in items:
        name, _, value = item.partition("=")
        if name not in limits:
            raise UserError(f"--limit {item!r}: unknown part {name!r}; parts: {', '.join(limits)}")
        try:
            limits[name] = float(value)
        except ValueError:
            raise UserError(f"--limit {item!r}: give PART=SECONDS, e.g. bench_compile=200") from None
        if not limits[name] > 0:
            raise UserError(f"--limit {item!r}: the limit must be more than 0 seconds")
    return limits


def _selected(only: str | None) -> list[str]:
    names = [name for name, _, _ in PARTS]
    if not only:
        return names
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen:
        raise UserError(f"--only {only!r}: unknown part(s) {', '.join(unknown) or '(none given)'}; parts: "
                        f"{', '.join(names)}")
    return chosen


def _prepare_out(out: Path) -> None:
    """The output directory exists and takes files, or one message."""
    from engine.errors import WorkbenchError
    from engine.io import atomic

    try:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / ".gpu_check_write_test", "")
        (out / ".gpu_check_write_test").unlink()
    except (OSError, WorkbenchError) as exc:
        why = exc if isinstance(exc, WorkbenchError) else f"{exc.strerror or exc} ({exc.filename or out})"
        raise UserError(f"--out {out}: cannot write there: {why}. Give a directory you can write to.") from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json, gpu_check.md, logs/")
    ap.add_argument("--dry", action="store_true", help="CPU dry run at tiny sizes (seconds; CI)")
    ap.add_argument("--only", metavar="PART,...", help="run only these parts (the others are recorded as skipped)")
    ap.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS", help="a part's own time limit")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds for all parts together (default {BUDGET_S} on a GPU, 600 dry)")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.part:                                      # one part, in its own process
        return run_part_here(args.part, args.dry, args.work, args.out)
    try:
        limits, selected = _limits(args.limit, args.dry), _selected(args.only)
        budget = args.budget if args.budget is not None else (600.0 if args.dry else float(BUDGET_S))
        if not budget > 0:
            raise UserError(f"--budget {budget}: give a number of seconds above 0")
        out = args.out.expanduser().resolve()
        _prepare_out(out)
    except UserError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    check = Check(out, args.dry, limits, selected, budget)
    try:
        check.write()
        code = check.run()
    except KeyboardInterrupt:
        check.write()
        print(f"gpu_check: interrupted; figures so far in {out / 'gpu_check.json'}", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(check.work, ignore_errors=True)
    print(f"gpu_check: {out / 'gpu_check.json'} and {out / 'gpu_check.md'} "
          f"({check.report['elapsed_s']} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())
