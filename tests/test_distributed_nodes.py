"""Issue 36: torchrun across nodes. Two torchrun agents ("nodes", one CPU process each, gloo) meet at a c10d
rendezvous on 127.0.0.1, as two machines would at the first one's address: one run directory, world size and
nodes in summary.json; a node killed mid-epoch ends the job failed with its last.pt intact and one message, and
`--resume` on two nodes goes on at the right step with no epoch logged twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import presets as P
from pg_server import free_port
from test_distributed import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def node_data(tmp_path_factory) -> Path:
    from engine.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("nodes") / "data", identities=6, per_identity=4, seed=0,
                                 vlr_size=(16, 16), hr_size=128)


def _preset(tmp_path: Path, **changes) -> Path:
    preset = P.load("cpu-demo").with_changes({**TINY, "dsr.batch_size": 4, "finetune.batch_size": 4,
                                              "runtime.runs_dir": str(tmp_path / "runs"), **changes})
    return P.save(preset, tmp_path / "nodes.toml")


def _nodes(argv: list[str], cwd: Path, count: int = 2) -> list[subprocess.Popen]:
    """``count`` torchrun agents, each in its own session (a node: the agent and its workers), one c10d
    rendezvous on 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--nnodes={count}",
                              f"--node_rank={rank}", "--nproc_per_node=1", "--rdzv-backend=c10d",
                              f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=nodes-{port}", "--max-restarts=0",
                              "-m", "workbench.cli.main", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
            for rank in range(count)]


def _finish(nodes: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    return [(node.returncode, out) for node in nodes for out, _ in [node.communicate(timeout=timeout)]]


def _val_epochs(run: Path) -> list[tuple[str, int]]:
    return [(r["stage"], r["epoch"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "val"]


def _weights(tmp_path: Path) -> Path:
    import torch

    from engine.io import atomic
    from engine.models.edgeface import build_edgeface, edgeface_checkpoint

    torch.manual_seed(0)
    return atomic.torch_save(tmp_path / "edgeface.pt", edgeface_checkpoint(build_edgeface("edgeface_xxs")))


def test_a_pipeline_on_two_nodes_writes_one_run_per_stage_with_world_size_and_nodes(tmp_path, node_data):
    argv = ["pipeline", "--preset", str(_preset(tmp_path)), "--data", str(node_data), "--edgeface",
            str(_weights(tmp_path)), "--run-dir", str(tmp_path / "pipe")]
    ended = _finish(_nodes(argv, tmp_path))
    assert [code for code, _ in ended] == [0, 0], [out[-2500:] for _, out in ended]
    stages = json.loads((tmp_path / "pipe" / "summary.json").read_text())["stage_runs"]
    for stage in ("train-dsr", "finetune"):
        run = Path(stages[stage])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["nodes"] == 2, (stage, summary)
        assert _val_epochs(run) == sorted(set(_val_epochs(run)))             # written once, by rank 0
    assert Path(stages["evaluate"], "eval.json").is_file()
    made = sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "runs").iterdir())
    assert made == ["dsr", "evaluate", "finetune"]                            # one run per stage, not per node


def _rank0_node(nodes: list[subprocess.Popen], run: Path) -> subprocess.Popen:
    """The node whose worker is rank 0 (status.json's pid; c10d gives ranks in no fixed order)."""
    parent = _parent(json.loads((run / "status.json").read_text())["pid"])
    return next(node for node in nodes if node.pid == parent)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):       # gone meanwhile
        return None


def _kill_node(node: subprocess.Popen) -> None:
    """SIGKILL a node as a power cut would: its agent and every worker it started."""
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(int(p.name)) == node.pid]
    for pid in [node.pid, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _await_file(pattern: str, folder: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next(folder.glob(pattern), None)
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} in {folder} after {timeout:.0f} s")


def test_a_node_killed_mid_epoch_fails_the_job_with_last_pt_intact_and_two_nodes_resume_it(tmp_path, node_data):
    import torch

    preset = _preset(tmp_path, **{"dsr.epochs": 12, "dsr.base_channels": 16})
    run = tmp_path / "dsr"
    nodes = _nodes(["train-dsr", "--preset", str(preset), "--data", str(node_data), "--run-dir", str(run)], tmp_path)
    try:
        _await_file("last.pt", run, 240)
        survivor = _rank0_node(nodes, run)
        _kill_node(next(node for node in nodes if node is not survivor))
        out, _ = survivor.communicate(timeout=120)
    finally:
        for node in nodes:
            _kill_node(node) if node.poll() is None else None
    assert survivor.returncode != 0
    said = " ".join(out.split())
    assert "another process of this 2-process torchrun job is gone" in said and "--resume RUN_DIR" in said
    status = json.loads((run / "status.json").read_text())
    assert status["state"] in ("failed", "dead")
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=False)     # intact, loadable
    done = int(checkpoint["loop"]["epoch"])
    assert 1 <= done < 12 and checkpoint["world_size"] == 2

    ended = _finish(_nodes(["train-dsr", "--resume", str(run)], tmp_path))
    assert [code for code, _ in ended] == [0, 0], [out[-2500:] for _, out in ended]
    assert _val_epochs(run) == [("dsr", epoch) for epoch in range(1, 13)]     # every epoch once: none twice
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["nodes"] == 2 and summary["epochs_run"] == 12
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
