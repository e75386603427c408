"""The Sweeps tab: the studies of the runs directory, the chosen one's trials live (state, value, values
tried, what they tried, pruned epoch, run), a best-so-far chart and the parameter importances.

While shown it re-reads the study every POLL_SECONDS in a thread (``engine.sweep.listing``), whoever
runs it: this app, the CLI, another machine sharing the storage. Enter opens the highlighted trial's
run (its curves and evaluation). The tab's own keys: n starts a sweep from the selected preset, x stops the
study's controller (its trials stop with checkpoints), b saves the best trial's preset, a attaches to the
highlighted trial's run; the work is ``controllers.sweep_controller``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Select, Static
from textual_plotext import PlotextPlot

from engine.errors import WorkbenchError
from engine.jobs.registry import sweep_trial_jobs
from engine.sweep.listing import StudyEntry, list_studies, server_label, study_key, study_snapshot
from workbench.app import messages as msg
from workbench.app.controllers import sweep_controller
from workbench.app.widgets.dialogs import ConfirmDialog, SaveAsDialog
from workbench.app.widgets.polling import PollWhileShown
from workbench.app.widgets.sweep_dialog import SweepDialog

POLL_SECONDS = 2.0
STATE_STYLE = {"complete": "green", "running": "bold yellow", "pruned": "dim", "fail": "red", "waiting": "dim"}


def value_text(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    return " / ".join(f"{v:.4g}" for v in values if isinstance(v, (int, float))) or "-"


def _short(text: str, width: int = 24) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def param_text(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def best_so_far(trials: list[dict[str, Any]], maximize: bool) -> tuple[list[int], list[float], list[float]]:
    """(trial numbers, values, best value up to each) of the complete single-objective trials."""
    numbers, values, best = [], [], []
    for row in trials:
        if row["state"] == "complete" and isinstance(row["value"], (int, float)):
            numbers.append(row["number"])
            values.append(float(row["value"]))
            best.append(max(best[-1], values[-1]) if best and maximize else
                        min(best[-1], values[-1]) if best else values[-1])
    return numbers, values, best


class SweepsPanel(PollWhileShown, Vertical):
    BORDER_TITLE = "Sweeps"
    BINDINGS = [
        Binding("n", "new", "New sweep", id="sweeps.new",
                tooltip="start a sweep of the selected preset (in its own process)"),
        Binding("x", "stop", "Stop sweep", id="sweeps.stop",
                tooltip="stop the shown study's controller (trials keep their checkpoints)"),
        Binding("b", "save_best", "Save best", id="sweeps.save_best",
                tooltip="save the best trial's preset under a new name"),
        Binding("a", "attach", "Attach trial", id="sweeps.attach", tooltip="follow the highlighted trial's run"),
    ]

    @dataclass
    class PresetSaved(Message):
        """A trial's preset was saved as a new user preset."""
        name: str

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs_dir: Path | None = None
        self.storage: str | None = None            # an RDB URL whose studies are listed too (the app's --storage)
        self.studies: list[StudyEntry] = []
        self.snapshot: dict[str, Any] | None = None
        self.chosen: str | None = None             # the key of the study shown (None: the first listed)
        self._reading = False
        self._problem = ""                          # the storage's error shown under the head ('' when none)
        self._param_keys: list[str] | None = None      # the table's parameter columns

    def compose(self) -> ComposeResult:
        yield Select([], prompt="no study yet", id="sweeps-study", compact=True, allow_blank=True,
                     type_to_search=False)      # printable keys stay the tab's ([ ] n x b a)
        yield Static("", id="sweeps-head")
        yield DataTable(id="sweeps-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="sweeps-side"):
            yield PlotextPlot(id="sweeps-chart")
            yield Static("", id="sweeps-importances")

    def on_mount(self) -> None:
        self.storage = self.storage or getattr(self.app, "storage", None)
        self.start_polling(POLL_SECONDS)

    # ----------------------------------------------------------------- data
    def watch_runs(self, runs_dir: str | Path) -> None:
        """Show the studies of ``runs_dir`` (the selected preset's)."""
        if self.runs_dir != Path(runs_dir):
            self.runs_dir, self.chosen, self.snapshot = Path(runs_dir), None, None
            if self.is_mounted:
                self.poll()

    def use_storage(self, url: str | None) -> None:
        """List the studies of the RDB at ``url`` too (a sweep was started on it)."""
        if url and url != self.storage:
            self.storage = url
            self.poll()

    def poll(self) -> None:
        if self.runs_dir is None or self._reading:
            return
        self._reading = True
        self.run_worker(lambda: self._read(self.runs_dir, self.storage, self.chosen), thread=True, group="sweeps",
                        exit_on_error=False)

    def _read(self, runs_dir: Path, storage: str | None, chosen: str | None) -> None:
        studies, snapshot, error = [], None, ""
        try:
            studies, unreadable = list_studies(runs_dir, storage)
            if unreadable:
                error = f"cannot read the studies of {server_label(storage)}: {unreadable}"
            entry = next((s for s in studies if s.key == chosen), None if unreadable else studies[0] if studies
                         else None)
            snapshot = study_snapshot(entry) if entry else None
        except Exception as exc:  # noqa: BLE001 - any storage or journal failure is shown; the next poll tries again
            error = f"cannot read the study: {exc}"
        self.app.call_from_thread(self._show, runs_dir, studies, snapshot, error)

    def _show(self, runs_dir: Path, studies: list[StudyEntry], snapshot: dict[str, Any] | None, error: str) -> None:
        self._reading = False
        if runs_dir != self.runs_dir:
            return
        if [s.key for s in studies] != [s.key for s in self.studies]:
            with self.prevent(Select.Changed):
                select = self.query_one("#sweeps-study", Select)
                select.set_options([(s.key, s.key) for s in studies])
                if snapshot:
                    select.value = snapshot["key"]
        self.studies = studies
        if error and not snapshot:
            self.query_one("#sweeps-head", Static).update(Text(error, style="red"))
            return
        if snapshot != self.snapshot:
            self.snapshot = snapshot
            self._fill()
        if error or self._problem:               # the storage's problem beside the journal study shown
            self._problem = error
            head = self._head_text(self.snapshot)
            if error:
                head.append(f"\n{error}", style="red")
            self.query_one("#sweeps-head", Static).update(head)

    @on(Select.Changed, "#sweeps-study")
    def _study_chosen(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str) and event.value != self.chosen:
            self.chosen = event.value
            self.poll()

    # ----------------------------------------------------------------- view
    def _fill(self) -> None:
        snap = self.snapshot
        self.query_one("#sweeps-head", Static).update(self._head_text(snap))
        table = self.query_one("#sweeps-table", DataTable)
        cursor = table.cursor_row
        trials = (snap or {}).get("trials", [])
        keys = list(dict.fromkeys(key for row in trials for key in row["params"]))
        table.clear(columns=keys != self._param_keys)
        if keys != self._param_keys:
            self._param_keys = keys
            for label in ("#", "state", "value", *(key.split(".")[-1] for key in keys), "tried because", "run"):
                table.add_column(label)
        for row in trials:
            state = row["state"] + (f" @{row['pruned_at_epoch']}" if row["pruned_at_epoch"] else "")
            table.add_row(str(row["number"]), Text(state, style=STATE_STYLE.get(row["state"], "")),
                          value_text(row["value"]) + (" *" if row["best"] and row["state"] == "complete" else ""),
                          *(param_text(row["params"].get(key)) for key in keys), _short(row["label"] or "sampler"),
                          Path(row["run_dir"]).name if row["run_dir"] else "-", key=str(row["number"]))
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self._draw_chart()
        weights = (snap or {}).get("importances") or {}
        self.query_one("#sweeps-importances", Static).update(
            "importances\n" + "\n".join(f" {k.split('.')[-1]:<18} {v:.2f}" for k, v in weights.items())
            if weights else "importances: after two complete trials")

    @staticmethod
    def _head_text(snap: dict[str, Any] | None) -> Text:
        if not snap:
            return Text("No sweep in this runs directory yet: n starts one from the selected preset "
                        "(or `vlr-workbench sweep` on the command line).", style="dim")
        states = [t["state"] for t in snap["trials"]]
        setup = snap["setup"]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "no trials"
        text = Text(f"{snap['study']}", style="bold")
        if snap.get("storage"):
            text.append(f" on {server_label(snap['storage'])}")
        text.append(f"  controller {snap['state']}  ·  {setup.get('job', '?')} trials  ·  "
                    f"{setup.get('objective', '?')} ({', '.join(snap['directions'])})  ·  {counts}")
        return text

    def best_so_far_values(self) -> tuple[list[int], list[float], list[float]]:
        """The chart's data: (trial numbers, values, best so far) of the complete trials."""
        snap = self.snapshot or {}
        return best_so_far(snap.get("trials", []), (snap.get("directions") or ["maximize"])[0] == "maximize")

    def _draw_chart(self) -> None:
        chart = self.query_one("#sweeps-chart", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        numbers, values, best = self.best_so_far_values()
        single = len((self.snapshot or {}).get("directions") or [1]) == 1
        plt.title("objective · best so far" if single else "first objective")
        if numbers:
            plt.scatter(numbers, values, marker="dot")
            plt.plot(numbers, best, marker="braille")
            plt.xticks(numbers if len(numbers) <= 8 else numbers[:: max(1, len(numbers) // 8)])
        chart.refresh()

    # ----------------------------------------------------------------- keys
    @property
    def highlighted(self) -> dict[str, Any] | None:
        """The trial row under the cursor (None: no trial)."""
        table = self.query_one("#sweeps-table", DataTable)
        trials = (self.snapshot or {}).get("trials", [])
        if not table.row_count or not trials:
            return None
        number = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((t for t in trials if str(t["number"]) == number), None)

    @property
    def best(self) -> dict[str, Any] | None:
        trials = [t for t in (self.snapshot or {}).get("trials", []) if t["best"] and t["state"] == "complete"]
        return trials[0] if trials else None

    @on(DataTable.RowSelected, "#sweeps-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        event.stop()
        trial = self.highlighted
        if trial and trial["run_dir"]:
            self.post_message(msg.RunOpened(Path(trial["run_dir"])))
        else:
            self.app.notify("this trial has no run directory yet", severity="warning")

    def why_disabled(self, action: str) -> str:
        """Why a key of this tab cannot act now ('' when it can)."""
        shown = self.snapshot
        if action == "stop" and (not shown or shown["state"] != "running"):
            why = "no study is shown" if not shown else f"its controller here is {shown['state']}" \
                if shown["state"] != "-" else "no controller of it runs on this host (stop one on another machine there)"
            return f"no sweep to stop: {why}"
        if action == "save_best" and (self.best is None or not self.best["run_dir"]):
            return "no complete trial to save yet"
        if action == "attach" and (self.highlighted is None or not self.highlighted["run_dir"]):
            return "no trial highlighted (or it has no run yet)"
        return ""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if self.why_disabled(action) else True

    def action_new(self) -> None:
        app = self.app
        space = sweep_controller.study_space(app.preset.runtime.runs_dir, self.snapshot["study"]) \
            if self.snapshot else ""
        app.push_screen(SweepDialog(f"{app.preset.name}-sweep", sweep_trial_jobs(), space, self._start,
                                    app.cursor_blink, storage=self.storage or ""))

    def _start(self, values: dict[str, Any]) -> str | None:
        """Start the dialog's sweep; the reason it cannot start, or None once started."""
        app = self.app
        try:
            job = sweep_controller.start(app.preset, app.data, values)
        except (WorkbenchError, OSError) as exc:
            return str(exc)
        app.jobs.adopt(job)
        study = values["study"] or f"{app.preset.name}-sweep"
        self.chosen = study_key(study, values.get("storage"))
        self.use_storage(values.get("storage"))
        self.poll()
        where = f" on {server_label(values['storage'])}" if values.get("storage") else ""
        self.post_message(msg.LogLine(
            f"▶ sweep {study}{where} started in its own process (pid {job.proc.pid}) with preset {app.preset.name}: "
            f"{values['trials']} {values['job']} trials, {values['objective']}; output {job.output}", "bold"))
        return None

    def action_stop(self) -> None:
        study = self.snapshot["study"]

        def stop(yes: bool | None) -> None:
            if yes:
                sweep_controller.stop(self.runs_dir, study)
                self.post_message(msg.LogLine(f"asked sweep {study} to stop (its running trials save their "
                                              "checkpoints)"))
                self.poll()
        self.app.push_screen(ConfirmDialog(f"Stop sweep {study}? Its running trials stop with their checkpoints; "
                                           "running the same sweep again resumes them.", "Stop"), stop)

    def action_save_best(self) -> None:
        best, study = self.best, self.snapshot["study"]
        base = self.snapshot["setup"].get("base_preset") or self.app.preset.name
        reference = self.app.preset

        def saved(name: str | None) -> None:
            if name:
                self.post_message(msg.LogLine(f"saved trial {best['number']} of {study} as preset {name}"))
                self.post_message(self.PresetSaved(name))
        self.app.push_screen(SaveAsDialog(sweep_controller.best_preset_name(base, study),
                                          lambda name: sweep_controller.save_trial(Path(best["run_dir"]), reference,
                                                                                   name),
                                          self.app.cursor_blink), saved)

    def action_attach(self) -> None:
        self.post_message(msg.AttachRequested(Path(self.highlighted["run_dir"])))
