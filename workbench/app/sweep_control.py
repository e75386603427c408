"""The app's sweep keys (on the Sweeps tab): n starts a sweep of the selected preset in its own process
(``engine.jobs.process.start_sweep``: it outlives the app, like t f p), x asks the study's controller
to stop, b saves the best trial's preset, a attaches to the highlighted trial's run and Enter opens it.
The tab itself (``widgets.sweeps_panel``) follows the study from its storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import TabbedContent

from engine.errors import WorkbenchError
from engine.io import atomic
from engine.jobs.options import SweepOptions
from engine.jobs.registry import sweep_trial_jobs
from engine.presets import save
from engine.sweep.launch import start_sweep
from engine.sweep.listing import controller_state, stop_sweep
from engine.sweep.places import control_dir
from engine.sweep.study import check_sweep, preset_from_run
from workbench.app.widgets.dialogs import ConfirmDialog, SaveAsDialog
from workbench.app.widgets.sweep_dialog import SweepDialog
from workbench.app.widgets.sweeps_panel import SweepsPanel

SWEEPS_KEYS = {"new": "n starts a sweep", "stop": "x stops a sweep", "save_best": "b saves a sweep's best preset",
               "attach": "a attaches to a trial"}


class SweepControl:
    def sweeps_tab_shown(self) -> bool:
        return (self.main_widget_ready() and self.screen is self.screen_stack[0]
                and self.main_widget(TabbedContent).active == "tab-sweeps")

    def action_sweeps_key(self, name: str) -> None:
        if not self.sweeps_tab_shown():
            self.notify(f"{SWEEPS_KEYS[name]} on the Sweeps tab (] switches tabs)", severity="warning")
            return
        getattr(self, f"_sweep_{name}")()

    @property
    def sweeps(self) -> SweepsPanel:
        return self.main_widget(SweepsPanel)

    # ----------------------------------------------------------------- n
    def _sweep_new(self) -> None:
        shown = self.sweeps.snapshot
        space = ""
        if shown:
            space_file = control_dir(self.preset.runtime.runs_dir, shown["study"]) / "space.toml"
            space = space_file.read_text(encoding="utf-8") if space_file.is_file() else ""
        self.push_screen(SweepDialog(f"{self.preset.name}-sweep", sweep_trial_jobs(), space, self._start_sweep,
                                     self.cursor_blink))

    def _start_sweep(self, values: dict[str, Any]) -> str | None:
        """Start the sweep the dialog describes; the reason it cannot start, or None once started."""
        runs_dir, study = self.preset.runtime.runs_dir, values["study"] or f"{self.preset.name}-sweep"
        try:
            control = control_dir(runs_dir, study)
            if controller_state(control) == "running":
                return (f"study {study} is running here already: x on the Sweeps tab stops it; give another "
                        "study name for a new sweep.")
            space_file = atomic.write_text(control / "space.toml", values["space"])
            opts = SweepOptions(space=str(space_file), job=values["job"], trials=values["trials"],
                                objective=values["objective"], study=study, parallel=values["parallel"])
            check_sweep(self.preset, opts)
            job = start_sweep(self.preset, self.data, opts)
        except (WorkbenchError, OSError) as exc:
            return str(exc)
        self.detached_jobs.append(job)
        self.watch_processes()
        self.sweeps.chosen = study
        self.sweeps.poll()
        self._log(f"▶ sweep {study} started in its own process (pid {job.proc.pid}) with preset "
                  f"{self.preset.name}: {values['trials']} {values['job']} trials, {values['objective']}; "
                  f"output {job.output}", "bold")
        return None

    # ----------------------------------------------------------------- x
    def _sweep_stop(self) -> None:
        shown = self.sweeps.snapshot
        if not shown or shown["state"] != "running":
            why = "no study is shown" if not shown else f"its controller here is {shown['state']}"
            self.notify(f"no sweep to stop: {why}", severity="warning")
            return
        self.push_screen(ConfirmDialog(f"Stop sweep {shown['study']}? Its running trials stop with their "
                                       "checkpoints; running the same sweep again resumes them.", "Stop"),
                         lambda yes: self._stop_sweep(shown["study"]) if yes else None)

    def _stop_sweep(self, study: str) -> None:
        stop_sweep(self.preset.runtime.runs_dir, study)
        self._log(f"asked sweep {study} to stop (its running trials save their checkpoints)")
        self.sweeps.poll()

    # ----------------------------------------------------------------- b
    def _sweep_save_best(self) -> None:
        best = self.sweeps.best
        if best is None or not best["run_dir"]:
            self.notify("no complete trial to save yet", severity="warning")
            return
        study = self.sweeps.snapshot["study"]
        self.push_screen(SaveAsDialog(f"{self.preset.name}-{study}-best".replace("_", "-"),
                                      lambda name: self._save_trial(Path(best["run_dir"]), name), self.cursor_blink),
                         lambda name: self._log(f"saved trial {best['number']} of {study} as preset {name}")
                         if name else None)

    def _save_trial(self, run_dir: Path, name: str) -> str | None:
        try:
            save(preset_from_run(run_dir, self.preset, name), name)
            self.main_widget("#presets").call_later(self.main_widget("#presets").reload, self.preset.name)
        except WorkbenchError as exc:
            return str(exc)
        return None

    # ----------------------------------------------------------------- a, Enter
    def _sweep_attach(self) -> None:
        trial = self.sweeps.highlighted
        if trial is None or not trial["run_dir"]:
            self.notify("no trial highlighted (or it has no run yet)", severity="warning")
            return
        self.attach(Path(trial["run_dir"]))

    def on_sweeps_panel_trial_chosen(self, message: SweepsPanel.TrialChosen) -> None:
        """Enter on a trial (a mixin's handler goes by its name: ``@on`` needs Textual's metaclass)."""
        self.open_run_dir(message.path)
