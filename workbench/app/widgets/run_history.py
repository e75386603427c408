"""Run history: past run directories; Enter opens one (its curves overlay the current run)."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from engine.runs import iter_runs
from workbench.app.messages import RunOpened


class RunHistory(Vertical):
    BORDER_TITLE = "Runs"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs_dir: Path | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="runs-note")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        table.add_column("run", key="run")
        table.add_column("metrics", key="metrics")
        table.add_column("eval", key="eval")
        table.add_column("ckpt", key="ckpt")
        yield table

    def reload(self, runs_dir: str | Path) -> int:
        self.runs_dir = Path(runs_dir)
        table = self.query_one("#runs-table", DataTable)
        table.clear()
        count = 0
        for path in iter_runs(self.runs_dir):
            metrics = path / "metrics.jsonl"
            lines = sum(1 for _ in metrics.open(encoding="utf-8")) if metrics.is_file() else 0
            ckpt = ", ".join(sorted(p.name for p in path.glob("*.pt")))
            table.add_row(path.name, str(lines), "yes" if (path / "eval.json").is_file() else "", ckpt,
                          key=str(path))
            count += 1
        note = f"{count} runs in {self.runs_dir}" if count else f"no runs yet in {self.runs_dir}"
        self.query_one("#runs-note", Static).update(f"{note} · Enter opens a run and overlays its curves")
        return count

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(RunOpened(Path(event.row_key.value)))
