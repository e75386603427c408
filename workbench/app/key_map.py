"""The app's keys in one place: which keys are app-wide, which belong to a tab, what a tab's key pressed on
another tab says, and the help and command-palette rows built from every scope's bindings (so that they
mirror the keys)."""

from __future__ import annotations

from functools import partial
from typing import Iterable

from textual.app import SystemCommand
from textual.binding import Binding

from engine.presets import list_presets
from workbench.app.main_screen import TAB_WIDGETS, TABS

HELP_NOTES = (
    "Each tab has its own keys (the footer shows those of the tab in focus; ? lists them all). Presets tab: arrows "
    "pick a field, Enter edits it (validated as you type), Esc goes back; ● marks unsaved changes, bold values "
    "differ from the built-in. Runs tab: Enter opens a run (its curves, evaluation and tips), space marks runs, "
    "c overlays the marked runs, d compares two, w writes their metrics as CSV, S or a header click sorts, a "
    "attaches to a running run (started anywhere: headless, torchrun, another app). t f p start the job in its "
    "own process (it outlives the app, a dropped SSH session and a closed browser tab) and follow it like an "
    "attached run: x stops it (it saves last.pt), D detaches and q leaves it running; B switches to jobs inside "
    "the app and back. Sweeps tab: n starts a sweep of the selected preset, x stops it (trials keep their "
    "checkpoints), b saves the best trial's preset, a attaches to a trial, Enter opens its run. [ and ] switch "
    "tabs from anywhere; ctrl+p opens the command palette (every action, every preset). In a browser: "
    "vlr-workbench serve (runs stay on disk).")


APP_KEYS = {"t", "f", "e", "p", "x", "D", "B", "v", "right_square_bracket", "left_square_bracket", "question_mark",
            "q", *map(str, range(1, 10))}


def keys_elsewhere() -> dict[str, list[tuple[str, str]]]:
    """The tabs' keys that the app does not bind itself: key -> [(tab, what it does there)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for tab, widget in TAB_WIDGETS.items():
        for binding in widget.BINDINGS:
            for key in binding.key.split(","):
                if key not in APP_KEYS:
                    found.setdefault(key, []).append((tab.removeprefix("tab-").title(),
                                                      binding.tooltip or binding.description))
    return found


ELSEWHERE = keys_elsewhere()


def elsewhere_text(key: str) -> str:
    places = "; ".join(f"{what} on the {tab} tab" for tab, what in ELSEWHERE.get(key, []))
    return f"{key}: {places} (] switches tabs)"


def scoped_bindings(app) -> list[tuple[str, object, Binding]]:
    """(tab, widget, binding) of every key: the app's (tab '') and each tab's own."""
    rows = [("", app, b) for b in app.BINDINGS if isinstance(b, Binding) and b.key in APP_KEYS
            and not b.key.isdigit()]
    for tab in TAB_WIDGETS:
        widget = app.main.tab_widget(tab)
        rows += [(tab, widget, b) for b in widget.BINDINGS if isinstance(b, Binding)]
    return rows


def help_rows(app) -> list[tuple[str, str]]:
    rows = [("1-9", "switch to preset 1-9 of the list (arrows also switch; the palette opens any preset)")]
    return rows + [(b.key_display or b.key, (f"{tab.removeprefix('tab-')} tab: " if tab else "")
                    + (b.tooltip or b.description)) for tab, _, b in scoped_bindings(app)]


def palette_commands(app) -> Iterable[SystemCommand]:
    """Every key's action (its tab named), every tab, every preset."""
    for tab, widget, binding in scoped_bindings(app):
        key = binding.key_display or binding.key
        where = f" on the {tab.removeprefix('tab-').title()} tab" if tab else ""
        yield SystemCommand(f"{binding.description} ({key}{where})", binding.tooltip or binding.description,
                            partial(app._palette_action, tab, widget, binding.action))
    for tab in TABS:
        yield SystemCommand(f"Show {tab.removeprefix('tab-')}", "switch tab", partial(app.main.show_tab, tab))
    for entry in list_presets():
        yield SystemCommand(f"Open preset {entry.name}", "built-in" if entry.builtin else str(entry.path),
                            partial(app.open_preset, entry.name))


APP_BINDINGS = [
    Binding("t", "train", "Train", id="job.train", tooltip="train DSR super-resolution"),
    Binding("f", "finetune", "Tune", id="job.finetune", tooltip="fine-tune EdgeFace on DSR outputs"),
    Binding("e", "evaluate", "Eval", id="job.evaluate", tooltip="evaluate the latest checkpoints"),
    Binding("p", "pipeline", "Pipe", id="job.pipeline", tooltip="DSR -> fine-tune -> evaluate"),
    Binding("x", "stop", "Stop", id="job.stop", tooltip="stop the job (asks first; leaves a resumable checkpoint)"),
    Binding("D", "detach", "Detach", show=False, id="job.detach",
            tooltip="stop following the attached run; it keeps running (a on the Runs tab attaches again)"),
    Binding("B", "toggle_detached", "Own-process jobs", show=False, id="job.detached_start",
            tooltip="t f p: the job in its own process (the default; it outlives the app) or inside the app"),
    Binding("v", "samples", "Samples", show=False, id="app.samples",
            tooltip="sample faces (VLR | bicubic | SR | HR) of the preset's latest DSR run"),
    # priority: a Select or table with focus never swallows them (text fields keep them: App.check_action)
    Binding("right_square_bracket", "next_tab(1)", "Next tab", show=False, key_display="]", id="tabs.next",
            priority=True),
    Binding("left_square_bracket", "next_tab(-1)", "Previous tab", show=False, key_display="[",
            id="tabs.previous", priority=True),
    Binding("question_mark", "help", "Help", key_display="?", id="app.help"),
    Binding("q", "quit", "Quit", id="app.quit", tooltip="quit (asks first while a job runs)"),
    *(Binding(str(n), f"select_preset({n})", f"Preset {n}", show=False, id=f"preset.select_{n}")
      for n in range(1, 10)),
    # a tab's key pressed on another tab says where it acts (reached only when the focused tab lacks it)
    *(Binding(key, f"elsewhere({key!r})", show=False) for key in ELSEWHERE),
]

# app-wide actions whose key a tab also binds (x: the Sweeps tab's stop, v: the Runs tab's samples): pressed while
# nothing in that tab has focus, the shown tab's meaning wins
SHARED_KEYS = {b.action: b.key for b in APP_BINDINGS if b.key in APP_KEYS
               and any(b.key in t.key.split(",") for w in TAB_WIDGETS.values() for t in w.BINDINGS)}
