"""The runs table: every run of the runs directory with its state and results ("which preset won").

Rows come from ``engine.runs.index`` (state from status.json: a killed run reads ``dead``). Click a
header or press S to sort, pick a preset or job in the filters, space marks runs: c overlays the
marked runs' curves on the charts, d compares two marked runs (preset diff and metric deltas),
w writes their metrics as CSV. Enter opens the highlighted run (curves and evaluation); a attaches
to it when it is running (the app follows it, ``workbench.app.attach_control``).
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Select, Static

from engine.io import atomic
from engine.errors import WorkbenchError
from engine.presets import Preset
from engine.runs.index import (SORT_KEYS, RunRow, display_cells, filter_rows, index_runs, metrics_csv, sort_rows,
                              split_name)
from workbench.app.messages import AttachRequested, RunOpened, RunsCompared
from workbench.app.widgets.dialogs import RunDiffDialog

COLUMNS = (("mark", " "), ("run", "run"), ("preset", "preset"), ("job", "job"), ("state", "state"),
           ("age", "age"), ("epochs", "ep"), ("psnr", "PSNR"), ("gain", "gain"), ("dsr", "dsr r1"),
           ("bicubic", "bic r1"), ("hr", "hr r1"), ("ckpt", "ckpt"), ("differs", "differs from preset"))
STATE_STYLES = {"running": "bold green", "finished": "green", "stopped": "yellow", "failed": "red", "dead": "bold red"}
ALL = ""


def short_stamp(row: RunRow) -> str:
    """``MMDD-HHMM`` of a ``<YYYYmmdd-HHMMSS>-...`` run directory, else its whole name."""
    return row.name[4:13] if split_name(row.name)[2] is not None else row.name


def run_label(row: RunRow) -> str:
    """A short name for legends: ``preset@MMDD-HHMM``."""
    stamp = short_stamp(row)
    return f"{row.preset}@{stamp}" if stamp != row.name else row.name


class RunHistory(Vertical):
    BORDER_TITLE = "Runs"
    BINDINGS = [
        Binding("space", "toggle_mark", "Mark", id="runs.mark", tooltip="mark or unmark the highlighted run"),
        Binding("c", "compare", "Overlay marked", id="runs.compare",
                tooltip="overlay the curves of the marked runs on the charts"),
        Binding("d", "diff", "Diff two", id="runs.diff", tooltip="preset diff and metric deltas of two marked runs"),
        Binding("w", "export_csv", "CSV", id="runs.csv", tooltip="write the metrics of the marked runs as CSV"),
        Binding("a", "attach", "Attach", id="runs.attach",
                tooltip="follow the highlighted running run here (x stops it, D detaches)"),
        Binding("S", "next_sort", "Sort", id="runs.sort", tooltip="sort by the next column (or click a header)"),
    ]

    clock = staticmethod(time.time)     # "now" of the age column (tests fix it)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs_dir: Path | None = None
        self.reference: Preset | None = None
        self.rows: list[RunRow] = []
        self.shown: list[RunRow] = []
        self.marked: list[Path] = []
        self.sort_key = "age"
        self.descending: bool | None = None
        self.preset_filter = ALL
        self.job_filter = ALL

    def compose(self) -> ComposeResult:
        with Horizontal(id="runs-filters"):
            yield Select([], prompt="all presets", id="runs-preset", compact=True)
            yield Select([], prompt="all jobs", id="runs-job", compact=True)
        yield Static("", id="runs-note")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table

    # ----------------------------------------------------------------- data
    def reload(self, runs_dir: str | Path, reference: Preset | None = None) -> int:
        """Read every run of ``runs_dir`` again; ``differs`` compares with ``reference``."""
        self.runs_dir = Path(runs_dir)
        if reference is not None:
            self.reference = reference
        self.rows = index_runs(self.runs_dir, self.reference)
        present = {row.path for row in self.rows}
        self.marked = [path for path in self.marked if path in present]
        self._fill_filters()
        return self.refill()

    def _fill_filters(self) -> None:
        for select_id, values, current in (("#runs-preset", {r.preset for r in self.rows}, self.preset_filter),
                                           ("#runs-job", {r.job for r in self.rows if r.job}, self.job_filter)):
            select = self.query_one(select_id, Select)
            with select.prevent(Select.Changed):
                select.set_options([(value, value) for value in sorted(values)])
                if current in values:
                    select.value = current

    def refill(self) -> int:
        """Show the rows that pass the filters, in the sort order; keeps the cursor on the same run."""
        table = self.query_one("#runs-table", DataTable)
        highlighted = self.highlighted
        rows = filter_rows(self.rows, preset=self.preset_filter or None, job=self.job_filter or None)
        self.shown = sort_rows(rows, self.sort_key, self.descending)
        table.clear()
        now = self.clock()
        for row in self.shown:
            table.add_row(*self._cells(row, now), key=str(row.path))
        if highlighted is not None and highlighted in {r.path for r in self.shown}:
            table.move_cursor(row=table.get_row_index(str(highlighted)))
        self._show_note()
        return len(self.shown)

    def _cells(self, row: RunRow, now: float) -> list[Text]:
        preset, job, state, age, epochs, psnr, gain, dsr, bicubic, hr = display_cells(row, now)
        mark = Text("●", style="bold yellow") if row.path in self.marked else Text("")
        ckpt = ", ".join(sorted(p.name for p in row.path.glob("*.pt")))
        differs = ", ".join(row.differs[:3]) + (f" +{len(row.differs) - 3}" if len(row.differs) > 3 else "")
        cells = [mark, short_stamp(row), preset, job, Text(state, style=STATE_STYLES.get(state, "")), age, epochs,
                 psnr, Text(gain, style="green" if gain.startswith("+") else ("red" if gain != "-" else "")),
                 dsr, bicubic, hr, ckpt, differs or ("-" if self.reference else "")]
        return [cell if isinstance(cell, Text) else Text(cell) for cell in cells]   # Text: no markup in names

    def _show_note(self) -> None:
        if not self.rows:
            note = f"no runs yet in {self.runs_dir}"
        else:
            order = "descending" if (self.descending if self.descending is not None
                                     else self.sort_key in ("epochs", "psnr", "gain", "dsr", "bicubic", "hr")) \
                else "ascending"
            if self.sort_key == "age":
                order = "newest first" if order == "ascending" else "oldest first"
            note = (f"{len(self.shown)} of {len(self.rows)} runs in {self.runs_dir} · sorted by {self.sort_key} "
                    f"({order}) · {len(self.marked)} marked")
        self.query_one("#runs-note", Static).update(
            Text(note + " · Enter opens · a attaches · space marks · c overlays · d diffs two · w CSV · S sorts"))

    @property
    def highlighted(self) -> Path | None:
        table = self.query_one("#runs-table", DataTable)
        if not self.shown or table.cursor_row is None or table.cursor_row >= len(self.shown):
            return None
        return self.shown[table.cursor_row].path

    def row_for(self, path: Path) -> RunRow | None:
        return next((row for row in self.rows if row.path == path), None)

    # ---------------------------------------------------------------- events
    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = str(event.value) if isinstance(event.value, str) else ""   # Select.NULL: all
        if event.select.id == "runs-preset":
            self.preset_filter = value
        else:
            self.job_filter = value
        self.refill()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = str(event.column_key.value)
        if key not in SORT_KEYS:
            self.notify(f"the {event.label} column does not sort; sortable: {', '.join(SORT_KEYS)}",
                        severity="warning")
            return
        self.set_sort(key, toggle=True)

    def set_sort(self, key: str, toggle: bool = False) -> None:
        if toggle and key == self.sort_key:
            current = self.descending if self.descending is not None else key in ("epochs", "psnr", "gain", "dsr",
                                                                                   "bicubic", "hr")
            self.descending = not current
        else:
            self.sort_key, self.descending = key, None
        self.refill()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(RunOpened(Path(event.row_key.value)))

    # --------------------------------------------------------------- actions
    def action_attach(self) -> None:
        self.post_message(AttachRequested(self.highlighted))

    def action_next_sort(self) -> None:
        self.set_sort(SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)])
        self.notify(f"runs sorted by {self.sort_key}")

    def action_toggle_mark(self) -> None:
        path = self.highlighted
        if path is None:
            self.notify("no run to mark: the table is empty", severity="warning")
            return
        if path in self.marked:
            self.marked.remove(path)
        else:
            self.marked.append(path)
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(str(path), "mark", Text("●", style="bold yellow") if path in self.marked else Text(""))
        self._show_note()

    def marked_rows(self) -> list[RunRow]:
        return [row for row in (self.row_for(path) for path in self.marked) if row is not None]

    def action_compare(self) -> None:
        rows = self.marked_rows()
        if not rows:
            self.notify("no run marked: space marks runs, then c overlays their curves", severity="warning")
            return
        self.post_message(RunsCompared([row.path for row in rows], [run_label(row) for row in rows]))

    def action_diff(self) -> None:
        rows = self.marked_rows()
        if len(rows) != 2:
            self.notify(f"d compares two marked runs ({len(rows)} marked): space marks or unmarks a run",
                        severity="warning")
            return
        try:
            self.app.push_screen(RunDiffDialog(*rows, labels=(run_label(rows[0]), run_label(rows[1]))))
        except WorkbenchError as exc:
            self.notify(str(exc), title="cannot compare", severity="error", timeout=10)

    def action_export_csv(self) -> None:
        rows = self.marked_rows() or ([self.row_for(self.highlighted)] if self.highlighted else [])
        if not rows or self.runs_dir is None:
            self.notify("no run to export: mark runs with space (or highlight one)", severity="warning")
            return
        path = self.runs_dir / f"metrics-{time.strftime('%Y%m%d-%H%M%S')}.csv"
        try:
            text = metrics_csv([row.path for row in rows])
            atomic.write_text(path, text)
        except (WorkbenchError, OSError) as exc:
            self.notify(str(exc), title="CSV not written", severity="error", timeout=10)
            return
        self.notify(f"wrote {path} ({len(rows)} runs, {text.count(chr(10)) - 1} rows)")
