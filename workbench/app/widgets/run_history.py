"""The runs table: every run of the runs directory with its state and results ("which preset won").

Rows come from ``engine.runs.index`` (state from status.json: a killed run reads ``dead``). Click a
header or press S to sort, pick a preset or job in the filters, space marks runs: c overlays the
marked runs' curves on the charts, d compares two marked runs (preset diff and metric deltas),
w writes their metrics as CSV. Enter opens the highlighted run (curves and evaluation); a attaches
to it when it is running (the app follows it, ``controllers.job_controller``). While shown, the
table watches the runs directory (``workbench.app.runs_watch``: stat calls every POLL_SECONDS, changed
runs re-read in a thread) and re-renders the ages every AGE_SECONDS. Columns that do not fit the width
go to the detail line under the table (``workbench.app.run_columns``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Select, Static

from engine.io import atomic
from engine.errors import WorkbenchError
from engine.presets import Preset
from engine.runs.index import SORT_KEYS, RunRow, filter_rows, format_age, metrics_csv, sort_rows
from workbench.app import messages as msg
from workbench.app.run_columns import (Layout, cell_texts, checkpoints, detail_text, distinct_labels, fit_layout,
                                       mark_text, run_label, short_stamp)
from workbench.app.run_export import why_not_export
from workbench.app.runs_watch import Stamps, read_changed, take_stamps
from workbench.app.widgets.dialogs import RunDiffDialog
from workbench.app.widgets.polling import PollWhileShown
from workbench.app.widgets.samples_view import SamplesScreen

__all__ = ["RunHistory", "run_label", "short_stamp"]

ALL = ""
POLL_SECONDS = 2.0     # while shown: stat the runs directory and the listed runs' files this often
AGE_SECONDS = 5.0      # while shown: re-render the age column at most this often (only cells that changed)


class RunsFilter(Select[str], inherit_bindings=False):
    """A filter of the runs table: enter, up or down open it; space is left to the table (it marks a run)."""

    BINDINGS = [Binding("enter,down,up", "show_overlay", "Show menu", show=False)]


class RunHistory(PollWhileShown, Vertical):
    BORDER_TITLE = "Runs"

    @dataclass
    class Compared(Message):
        """The user asked to overlay the curves of several runs (``labels`` name them in legends)."""
        paths: list[Path]
        labels: list[str]

    BINDINGS = [
        Binding("space", "toggle_mark", "Mark", id="runs.mark", tooltip="mark or unmark the highlighted run"),
        Binding("c", "compare", "Overlay marked", id="runs.compare",
                tooltip="overlay the curves of the marked runs on the charts"),
        Binding("d", "diff", "Diff two", id="runs.diff", tooltip="preset diff and metric deltas of two marked runs"),
        Binding("w", "export_csv", "CSV", id="runs.csv", tooltip="write the metrics of the marked runs as CSV"),
        Binding("a", "attach", "Attach", id="runs.attach",
                tooltip="follow the highlighted running run here (x stops it, D detaches)"),
        Binding("S", "next_sort", "Sort", id="runs.sort", tooltip="sort by the next column (or click a header)"),
        Binding("v", "samples", "Samples", id="runs.samples",
                tooltip="sample faces (VLR | bicubic | SR | HR) of the highlighted run"),
        Binding("E", "export_model", "Export", id="runs.export",
                tooltip="export the highlighted finished pipeline or evaluate run to ONNX, into RUN/export"),
    ]

    clock = staticmethod(time.time)     # "now" of the age column (tests fix it)

    class RowsRead(Message):
        """A thread has read the runs that changed: (rows, stamps), or None when reading failed."""

        def __init__(self, generation: int, result: tuple[list[RunRow], Stamps] | None) -> None:
            super().__init__()
            self.generation = generation
            self.result = result

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
        self.table_layout = Layout()
        self.refills = 0                    # how often the table was filled (tests: no redraw without news)
        self._stamps = Stamps()
        self._generation = 0                # a reload makes a thread's older reading stale
        self._reading = False
        self._ages: dict[Path, str] = {}
        self._ages_at = 0.0
        self._filter_values: dict[str, set[str]] = {}

    def compose(self) -> ComposeResult:
        with Horizontal(id="runs-filters"):
            yield RunsFilter([], prompt="all presets", id="runs-preset", compact=True, type_to_search=False)
            yield RunsFilter([], prompt="all jobs", id="runs-job", compact=True, type_to_search=False)
        yield Static("", id="runs-note")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for key, label in self.table_layout.columns:
            table.add_column(label, key=key)
        yield table
        yield Static("", id="runs-detail")

    def on_mount(self) -> None:
        self.query_one("#runs-detail").display = False
        self.start_polling(POLL_SECONDS)

    def on_resize(self) -> None:
        if self.rows and self._fit() != self.table_layout:
            self.refill()

    # ----------------------------------------------------------------- data
    def reload(self, runs_dir: str | Path, reference: Preset | None = None) -> int:
        """Read every run of ``runs_dir`` again; ``differs`` compares with ``reference``."""
        self.runs_dir = Path(runs_dir)
        if reference is not None:
            self.reference = reference
        self._generation += 1
        rows, self._stamps = read_changed(self.runs_dir, {}, Stamps(), self.reference, time.time())
        return self._set_rows(rows)

    def _set_rows(self, rows: list[RunRow]) -> int:
        self.rows = rows
        present = {row.path for row in self.rows}
        self.marked = [path for path in self.marked if path in present]
        self._fill_filters()
        return self.refill()

    def poll(self) -> bool:
        """Look for news in the runs directory (stat calls only); True when something changed: the changed
        runs are read again in a thread and the table is filled when they are in."""
        if self.runs_dir is None:
            return False
        self._tick_ages()
        if self._reading:
            return False
        running = {row.path for row in self.rows if row.state == "running"}
        stamps = take_stamps(self.runs_dir, self._stamps.paths, self._stamps.waiting, running, time.time())
        if stamps == self._stamps:
            return False
        self._reading = True
        self._read_changed(self._generation, self.runs_dir, {row.path: row for row in self.rows}, self._stamps,
                           self.reference)
        return True

    @work(thread=True, exit_on_error=False, group="runs-watch", name="runs-watch")
    def _read_changed(self, generation: int, runs_dir: Path, rows: dict[Path, RunRow], stamps: Stamps,
                      reference: Preset | None) -> None:
        result = None
        try:
            result = read_changed(runs_dir, rows, stamps, reference, time.time())
        finally:
            self.post_message(self.RowsRead(generation, result))

    def on_run_history_rows_read(self, message: RowsRead) -> None:
        message.stop()
        self._reading = False
        if message.generation != self._generation or message.result is None:
            return
        rows, self._stamps = message.result
        if rows != self.rows:                 # only news fills the table again
            self._set_rows(rows)

    def _tick_ages(self) -> None:
        """Re-render the ages that changed, at most every AGE_SECONDS."""
        if time.monotonic() - self._ages_at < AGE_SECONDS:
            return
        self._ages_at = time.monotonic()
        if "age" in self.table_layout.dropped:
            self._show_detail()
            return
        now, table = self.clock(), self.query_one("#runs-table", DataTable)
        changed = {row.path: format_age(row.age_seconds(now)) for row in self.shown}
        changed = {path: age for path, age in changed.items() if self._ages.get(path) != age}
        if any(len(age) > len(self._ages.get(path, "")) for path, age in changed.items()):
            self.refill()                     # a wider age (9m -> 10m): the columns are fitted again
            return
        for path, age in changed.items():
            table.update_cell(str(path), "age", Text(age))
            self._ages[path] = age

    def _fill_filters(self) -> None:
        for select_id, values, current in (("#runs-preset", {r.preset for r in self.rows}, self.preset_filter),
                                           ("#runs-job", {r.job for r in self.rows if r.job}, self.job_filter)):
            select = self.query_one(select_id, Select)
            if self._filter_values.get(select_id) == values:
                continue                      # unchanged: an open dropdown stays as it is
            self._filter_values[select_id] = values
            with select.prevent(Select.Changed):
                select.set_options([(value, value) for value in sorted(values)])
                if current in values:
                    select.value = current

    def _texts(self, now: float) -> tuple[list[dict[str, Text]], list[dict[str, Text]]]:
        """The cells of the shown rows, whole and abbreviated."""
        full, short = [], []
        for row in self.shown:
            marked, ckpt = row.path in self.marked, checkpoints(row.path)
            full.append(cell_texts(row, now, marked, self.reference is not None, ckpt=ckpt))
            short.append(cell_texts(row, now, marked, self.reference is not None, short=True, ckpt=ckpt))
        return full, short

    def _room(self) -> int:
        """Cells the table's columns may take (the vertical scrollbar's room kept free)."""
        table = self.query_one("#runs-table", DataTable)
        return max(0, self.size.width - table.styles.scrollbar_size_vertical)

    def _fit(self, texts=None) -> Layout:
        if self._room() == 0:                # not laid out yet (a hidden tab): keep the layout until shown
            return self.table_layout
        full, short = texts or self._texts(self.clock())
        return fit_layout(full, short, self._room(), self.query_one("#runs-table", DataTable).cell_padding)

    def refill(self) -> int:
        """Show the rows that pass the filters, in the sort order; keeps the cursor on the same run."""
        table = self.query_one("#runs-table", DataTable)
        highlighted = self.highlighted
        rows = filter_rows(self.rows, preset=self.preset_filter or None, job=self.job_filter or None)
        self.shown = sort_rows(rows, self.sort_key, self.descending)
        now = self.clock()
        texts = self._texts(now)
        layout = self._fit(texts)
        table.clear(columns=layout != self.table_layout)
        if layout != self.table_layout:
            self.table_layout = layout
            for key, label in layout.columns:
                table.add_column(label, key=key)
        for row, cells in zip(self.shown, texts[1] if layout.short else texts[0]):
            table.add_row(*(cells[key] for key, _ in layout.columns), key=str(row.path))
        self._ages = {row.path: format_age(row.age_seconds(now)) for row in self.shown}
        if highlighted is not None and highlighted in {r.path for r in self.shown}:
            table.move_cursor(row=table.get_row_index(str(highlighted)))
        self._show_note()
        self._show_detail()
        self.refills += 1
        return len(self.shown)

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

    def _show_detail(self) -> None:
        """The line under the table: the highlighted run's values of the columns the width left out."""
        detail = self.query_one("#runs-detail", Static)
        detail.display = bool(self.table_layout.dropped)
        row = self.row_for(self.highlighted) if self.table_layout.dropped and self.highlighted else None
        text = detail_text(row, self.table_layout, self.clock(), self.reference is not None) if row else Text("")
        if text != detail.content:
            detail.update(text)

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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(msg.RunOpened(Path(event.row_key.value)))

    # --------------------------------------------------------------- actions
    def why_disabled(self, action: str) -> str:
        if action != "export_model":
            return ""
        return why_not_export(self.row_for(self.highlighted) if self.highlighted else None) or \
            self.app.jobs.why_not("export")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.why_disabled(action) else True

    def action_export_model(self) -> None:
        self.post_message(msg.ExportRequested(self.highlighted))

    def action_attach(self) -> None:
        self.post_message(msg.AttachRequested(self.highlighted))

    def action_samples(self) -> None:
        run = self.highlighted
        if run is None:
            self.notify("no run highlighted: pick a train-dsr run (or a pipeline) in the table, then v",
                        severity="warning")
            return
        screen = SamplesScreen(run)
        if not screen.strips:
            self.notify(f"{run.name} has no sample strips (train-dsr writes samples/epoch_NNN.png)",
                        severity="warning")
            return
        self.app.push_screen(screen)

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
        table.update_cell(str(path), "mark", mark_text(path in self.marked))
        self._show_note()

    def marked_rows(self) -> list[RunRow]:
        return [row for row in (self.row_for(path) for path in self.marked) if row is not None]

    def action_compare(self) -> None:
        rows = self.marked_rows()
        if not rows:
            self.notify("no run marked: space marks runs, then c overlays their curves", severity="warning")
            return
        self.post_message(self.Compared([row.path for row in rows], distinct_labels(rows)))

    def action_diff(self) -> None:
        rows = self.marked_rows()
        if len(rows) != 2:
            self.notify(f"d compares two marked runs ({len(rows)} marked): space marks or unmarks a run",
                        severity="warning")
            return
        try:
            self.app.push_screen(RunDiffDialog(*rows, labels=tuple(distinct_labels(rows))))
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
