"""The runs table's columns: the cells of a run, and the layout that fits the table's width.

When the whole table does not fit, it first abbreviates (job names, long names cut; never the state),
then moves whole columns out of the table into the detail line under it, least useful first
(``DROP_ORDER``): every value stays visible without scrolling sideways, at 80 columns too. No
Textual here: ``widgets/run_history.py`` shows what this computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from engine.jobs.registry import short_job_name
from engine.runs.index import RunRow, display_cells, split_name

COLUMNS = (("mark", " "), ("run", "run"), ("preset", "preset"), ("job", "job"), ("state", "state"),
           ("age", "age"), ("epochs", "ep"), ("psnr", "PSNR"), ("gain", "gain"), ("dsr", "dsr r1"),
           ("bicubic", "bic r1"), ("hr", "hr r1"), ("ckpt", "ckpt"), ("differs", "differs from preset"))
SHORT_HEADERS = {"dsr": "dsr", "bicubic": "bic", "hr": "hr", "differs": "differs"}
DROP_ORDER = ("differs", "ckpt", "epochs", "hr", "age", "bicubic", "gain")   # moved to the detail line first
SHORT_CHARS = 10          # preset, run and differs cells of the abbreviated table are cut to this
STATE_STYLES = {"running": "bold green", "finished": "green", "stopped": "yellow", "failed": "red", "dead": "bold red",
                "damaged": "bold magenta"}


def short_stamp(row: RunRow) -> str:
    """``MMDD-HHMM`` of a ``<YYYYmmdd-HHMMSS>-...`` run directory, else its whole name."""
    return row.name[4:13] if split_name(row.name)[2] is not None else row.name


def run_label(row: RunRow) -> str:
    """A short name for legends: ``preset@MMDD-HHMM``."""
    stamp = short_stamp(row)
    return f"{row.preset}@{stamp}" if stamp != row.name else row.name


def distinct_labels(rows: list[RunRow]) -> list[str]:
    """``run_label`` of each row; where two rows would share one, ``preset@MMDD-HHMMSS``, else the run
    directory's whole name."""
    first = [run_label(row) for row in rows]
    labels = [f"{row.preset}@{row.name[4:15]}" if first.count(label) > 1 and split_name(row.name)[2] is not None
              else label for row, label in zip(rows, first)]
    return [row.name if labels.count(label) > 1 else label for row, label in zip(rows, labels)]


def mark_text(marked: bool) -> Text:
    return Text("●", style="bold yellow") if marked else Text("")


def checkpoints(path: Path) -> str:
    return ", ".join(sorted(p.name for p in path.glob("*.pt")))


def _cut(text: str, chars: int = SHORT_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def cell_texts(row: RunRow, now: float, marked: bool, has_reference: bool, short: bool = False,
               ckpt: str | None = None) -> dict[str, Text]:
    """Every column's cell of ``row`` (Text: names are never markup); ``short`` abbreviates; ``ckpt``: the
    checkpoints when already listed."""
    preset, job, state, age, epochs, psnr, gain, dsr, bicubic, hr = display_cells(row, now)
    limit = None if short else 3
    shown = row.differs if limit is None else row.differs[:limit]
    differs = ", ".join(shown) + (f" +{len(row.differs) - len(shown)}" if len(row.differs) > len(shown) else "")
    texts = {"mark": mark_text(marked), "run": short_stamp(row), "preset": preset, "job": job,
             "state": Text(state, style=STATE_STYLES.get(state, "")),
             "age": age, "epochs": epochs, "psnr": psnr,
             "gain": Text(gain, style="green" if gain.startswith("+") else ("red" if gain != "-" else "")),
             "dsr": dsr, "bicubic": bicubic, "hr": hr, "ckpt": checkpoints(row.path) if ckpt is None else ckpt,
             "differs": differs or ("-" if has_reference else "")}
    if short:
        texts.update(run=_cut(texts["run"], SHORT_CHARS + 2), preset=_cut(preset), job=short_job_name(job),
                     differs=_cut(texts["differs"], 2 * SHORT_CHARS))
    return {key: value if isinstance(value, Text) else Text(value) for key, value in texts.items()}


@dataclass(frozen=True)
class Layout:
    """Which columns the table shows, abbreviated or not; the dropped ones go to the detail line."""

    short: bool = False
    dropped: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return tuple((key, SHORT_HEADERS.get(key, header) if self.short else header)
                     for key, header in COLUMNS if key not in self.dropped)

    def width(self, cells: list[dict[str, Text]], padding: int = 1) -> int:
        """The table's width with these columns: each as wide as its widest cell or header, plus padding."""
        return sum(max([Text(header).cell_len, *(row[key].cell_len for row in cells)]) + 2 * padding
                   for key, header in self.columns)


LAYOUTS = (Layout(), *(Layout(True, DROP_ORDER[:count]) for count in range(len(DROP_ORDER) + 1)))


def fit_layout(full: list[dict[str, Text]], short: list[dict[str, Text]], width: int, padding: int = 1) -> Layout:
    """The first of ``LAYOUTS`` whose table fits ``width`` cells (the last when none does)."""
    for layout in LAYOUTS:
        if layout.width(short if layout.short else full, padding) <= width:
            return layout
    return LAYOUTS[-1]


def detail_text(row: RunRow, layout: Layout, now: float, has_reference: bool) -> Text:
    """The detail line of a run: its whole name and the values of the columns the table left out."""
    full = cell_texts(row, now, False, has_reference)
    full["differs"] = Text(", ".join(row.differs) or ("-" if has_reference else ""))
    headers = {**dict(COLUMNS), "differs": "differs"}
    text = Text(row.name, style="bold")
    for key in (key for key, _ in COLUMNS if key in layout.dropped):
        text.append(f" · {headers[key]} ")
        text.append_text(full[key] if full[key].plain else Text("-"))
    return text
