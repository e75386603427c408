"""benchmarks/gpu_check.py: the dry run writes every section, a part over its limit is recorded as timed out
while the later parts still run, bad input is one message (exit 2), and the projection's arithmetic."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module          # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _module()


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          env=environment, timeout=timeout, check=False)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"     # a zombie has ended


def test_the_dry_run_writes_every_section_with_a_status_and_the_markdown(tmp_path):
    out = tmp_path / "gc"
    done = _run("--dry", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    assert set(report["sections"]) == set(gpu_check.SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section)
        assert section["seconds"] is not None and section["figures"]["dry_run"] is True
    sections = report["sections"]
    assert sections["machine"]["figures"]["cuda_available"] is False
    assert sections["cuda_tests"]["figures"]["skipped"] > 10 and sections["cuda_tests"]["figures"]["failed"] == 0
    assert sections["bench_guide"]["figures"]["dsr"]["ratio"] > 0
    assert sections["find_batch"]["figures"]["train-dsr"]["largest"] == 4
    assert sections["pipeline"]["figures"]["eval"]["dsr"]["rank1"] is not None
    assert sections["projection"]["figures"]["at"]["guide batch, eager"]["total_hours"] > 0
    markdown = (out / "gpu_check.md").read_text()
    assert "dry run" in markdown and all(f"| {name} | ok |" in markdown for name in gpu_check.SECTIONS)
    assert all((out / "logs" / f"{name}.log").is_file() for name, _, _ in gpu_check.PARTS)


def test_a_part_over_its_limit_is_timed_out_with_its_children_and_the_later_parts_still_run(tmp_path):
    out = tmp_path / "gc"
    done = _run("--dry", "--out", str(out), "--only", "machine,find_batch", "--limit", "machine=3",
                env={gpu_check.HANG_ENV: "machine"})
    assert done.returncode == 1, done.stdout + done.stderr             # a part timed out
    sections = json.loads((out / "gpu_check.json").read_text())["sections"]
    machine = sections["machine"]
    assert machine["status"] == "timed_out" and 3 <= machine["seconds"] < 20 and machine["limit_s"] == 3
    assert "hanging on purpose" in machine["output_tail"] and "3 s limit" in machine["note"]
    assert not _alive(int((out / "logs" / "machine.hang.pid").read_text()))   # its child was ended too
    assert sections["find_batch"]["status"] == "ok"                    # the next part ran
    assert {sections[n]["status"] for n in ("bench_guide", "cuda_tests", "pipeline")} == {"skipped"}
    assert sections["projection"]["status"] == "skipped"
    assert "| machine | timed out |" in (out / "gpu_check.md").read_text()


def test_without_cuda_and_without_dry_the_machine_is_recorded_and_the_command_stops(tmp_path):
    out = tmp_path / "gc"
    done = _run("--out", str(out), "--only", "machine", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and "--dry" in done.stderr and "Traceback" not in done.stderr
    sections = json.loads((out / "gpu_check.json").read_text())["sections"]
    assert sections["machine"]["status"] == "ok" and sections["machine"]["figures"]["torch"]
    assert all(s["status"] == "skipped" for n, s in sections.items() if n != "machine")


@pytest.mark.parametrize("args, says", [
    (["--out", "{file}/sub"], "cannot write there"),
    (["--out", "{dir}", "--only", "machine,warp_drive"], "unknown part(s) warp_drive"),
    (["--out", "{dir}", "--limit", "machine=soon"], "give PART=SECONDS"),
    (["--out", "{dir}", "--limit", "nothing=3"], "unknown part 'nothing'"),
    (["--out", "{dir}", "--budget", "0"], "above 0"),
])
def test_bad_input_is_one_message_and_exit_2(tmp_path, capsys, args, says):
    (tmp_path / "file").write_text("a file, not a directory")
    args = [a.format(file=tmp_path / "file", dir=tmp_path / "out") for a in args]
    assert gpu_check.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: ") and says in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_the_projection_is_the_guides_images_and_epochs_at_the_measured_rates():
    sections = {"bench_guide": {"figures": {"dsr": {"engine_img_s": 1000.0}, "finetune": {"engine_img_s": 2000.0}}},
                "bench_largest": {"figures": {"dsr": {"engine_img_s": 4000.0}}}, "bench_compile": {"figures": {}}}
    result = gpu_check.projection(sections, dry=False, final=True)
    guide = result["figures"]["at"]["guide batch, eager"]
    assert guide["dsr_hours"] == round(111_568 * 100 / 1000 / 3600, 2) == 3.1
    assert guide["finetune_hours"] == round(111_568 * 25 / 2000 / 3600, 2) and guide["total_hours"] == 3.49
    assert "finetune_hours" not in result["figures"]["at"]["largest batch, eager"]
    assert "guide batch, DSR compiled" not in result["figures"]["at"]          # nothing compiled was measured
    assert result["status"] == "ok" and result["figures"]["guide_dsr_hours"] == [10, 14]
    assert gpu_check.projection({}, dry=False, final=False)["status"] == "pending"
    assert gpu_check.projection({}, dry=False, final=True)["status"] == "skipped"


def test_no_function_of_the_script_is_longer_than_80_lines():
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1}" for node in ast.walk(ast.parse(SCRIPT.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert long == []
