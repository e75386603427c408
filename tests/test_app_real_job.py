"""The app with the real train-dsr job on generated demo data: a tiny DSR that needs no recogniser."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from engine.events import Finished, Progress
from engine.presets import load
from workbench.app.app import WorkbenchApp
from workbench.app.messages import JobEvents
from workbench.app.metric_buffers import LIVE_SPLIT
from workbench.app.widgets.charts import MetricChart
from workbench.app.widgets.job_panel import JobPanel
from workbench.app.widgets.run_history import RunHistory

from app_helpers import NoGpuProbe, wait_for

TINY = {"dsr.lambda_identity": 0.0, "dsr.lambda_feature_match": 0.0, "dsr.lambda_perceptual": 0.0,
        "dsr.epochs": 1, "dsr.warmup_epochs": 0, "dsr.base_channels": 8, "dsr.residual_blocks": 1,
        "dsr.batch_size": 16, "runtime.device": "cpu"}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def events_of(messages, kind) -> list:
    """The engine events of ``kind`` the app received, in order (a followed run's arrive in batches)."""
    found = []
    for message in messages:
        batch = message.events if isinstance(message, JobEvents) else [getattr(message, "event", None)]
        found += [event for event in batch if isinstance(event, kind)]
    return found


@pytest.mark.parametrize("own_process", [True, False], ids=["own-process", "in-app"])
async def test_real_train_dsr_updates_progress_and_charts_then_stops_resumably(demo_root, tmp_path, own_process):
    """Both ways the app runs a job: its own process (the default; followed from its run directory) and
    a thread of the app (B)."""
    preset = load("cpu-demo").with_changes(TINY)
    app = WorkbenchApp(preset, data=str(demo_root), probe_factory=NoGpuProbe, cursor_blink=False, remember=False,
                       detached=own_process)
    seen = []
    async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
        await pilot.press("t")
        assert bool(app.jobs.detached_jobs) == own_process
        await wait_for(pilot, lambda: not app.jobs.running, timeout=120, what="the real train-dsr job")
        panel = app.query_one(JobPanel)
        assert panel.state == "finished", str(app.query_one("#job-detail").render())
        assert events_of(seen, Progress) and panel.last is not None and panel.last.steps > 0
        psnr = app.buffers.series("dsr", "val", "psnr")
        assert len(psnr) == 1 and 5.0 < psnr[0][1] < 60.0
        assert app.buffers.last("dsr", "val", "bicubic_psnr") is not None
        assert app.buffers.series("dsr", LIVE_SPLIT, "loss")  # per-step loss from Progress
        await wait_for(pilot, lambda: "bicubic" in app.query_one("#chart-psnr", MetricChart).title_text,
                       what="the PSNR chart with its bicubic line")
        runs = app.query_one(RunHistory).query_one(DataTable)
        assert runs.row_count == 1 and "best.pt" in str(runs.get_cell_at((0, runs.get_column_index("ckpt"))))

        # a longer run, stopped after its first progress: the trainer leaves a resumable last.pt
        app.preset = app.preset.with_changes({"dsr.epochs": 500})
        await pilot.press("t")
        await wait_for(pilot, lambda: panel.last is not None and panel.last.epochs == 500,
                       timeout=60, what="progress of the long run")
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: not app.jobs.running, timeout=60, what="the stop")
        assert panel.state == "stopped"
    finished = events_of(seen, Finished)
    assert [f.stopped for f in finished] == [False, True]
    assert (finished[1].run_dir / "last.pt").is_file() and finished[1].run_dir != finished[0].run_dir
