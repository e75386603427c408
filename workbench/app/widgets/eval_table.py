"""Evaluation results: dsr / bicubic / hr side by side, from a run's eval.json."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from workbench.app.eval_results import columns, comparison_text, table_rows


class EvalTable(Vertical):
    BORDER_TITLE = "Evaluation"

    def compose(self) -> ComposeResult:
        yield Static("no evaluation yet: press e (uses the latest checkpoints of this preset)", id="eval-source")
        table = DataTable(id="eval-rows", cursor_type="row", zebra_stripes=True)
        table.add_column("metric", key="metric")
        table.add_column("DSR", key="dsr")
        table.add_column("bicubic", key="bicubic")
        table.add_column("HR", key="hr")
        yield table
        comparisons = Static("", id="eval-comparisons")
        comparisons.display = False
        yield comparisons

    def show(self, evaluation: dict[str, Any], source: str) -> None:
        table = self.query_one("#eval-rows", DataTable)
        wanted = columns(evaluation)
        if [str(c.key.value) for c in table.columns.values()] != ["metric", *(key for key, _ in wanted)]:
            table.clear(columns=True)
            table.add_column("metric", key="metric")
            for key, label in wanted:
                table.add_column(label, key=key)
        table.clear()
        comparisons = self.query_one("#eval-comparisons", Static)
        text = comparison_text(evaluation)
        comparisons.update(text)
        comparisons.display = bool(text)
        for row in table_rows(evaluation):
            table.add_row(*row, key=row[0])
        note = "" if evaluation.get("dsr") else " (no DSR checkpoint: bicubic baseline only)"
        self.query_one("#eval-source", Static).update(f"{source}{note}")

    def cell(self, metric: str, column: str) -> str:
        return str(self.query_one("#eval-rows", DataTable).get_cell(metric, column))
