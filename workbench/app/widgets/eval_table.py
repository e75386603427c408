"""Evaluation results: dsr / bicubic / hr side by side, from a run's eval.json."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from workbench.app.eval_results import columns, comparison_text, table_rows, table_width


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

    evaluation: dict[str, Any] | None = None
    source = ""

    def on_resize(self) -> None:
        if self.evaluation is not None:
            self.show(self.evaluation, self.source)

    def show(self, evaluation: dict[str, Any], source: str) -> None:
        """The rows side by side; when they do not fit the width, without their intervals (said above)."""
        self.evaluation, self.source = evaluation, source
        table = self.query_one("#eval-rows", DataTable)
        table.clear(columns=True)           # the columns are sized afresh (narrower without intervals)
        table.add_column("metric", key="metric")
        for key, label in columns(evaluation):
            table.add_column(label, key=key)
        comparisons = self.query_one("#eval-comparisons", Static)
        text = comparison_text(evaluation)
        comparisons.update(text)
        comparisons.display = bool(text)
        rows = table_rows(evaluation)
        room = self.content_size.width - table.styles.scrollbar_size_vertical
        short = room > 0 and table_width(rows, table.cell_padding) > room
        for row in table_rows(evaluation, intervals=False) if short else rows:
            table.add_row(*row, key=row[0])
        note = "" if evaluation.get("dsr") else " (no DSR checkpoint: bicubic baseline only)"
        if short:
            note += " · 95% intervals left out at this width (`vlr-workbench report RUN` has them)"
        self.query_one("#eval-source", Static).update(f"{source}{note}")

    def cell(self, metric: str, column: str) -> str:
        return str(self.query_one("#eval-rows", DataTable).get_cell(metric, column))
