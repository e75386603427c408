"""What an export ships: the DSR checkpoint, the recogniser and the evaluation of a finished run.

A pipeline run names its evaluation in summary.json; an evaluate run holds eval.json. The evaluation's
protocol names the DSR checkpoint and the recogniser of its ``dsr`` row, which enrolled the gallery and
embedded the DSR probes: the probe graph is that DSR and that recogniser, the gallery graph that recogniser.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import WorkbenchError
from engine.runs.records import read_evaluation, read_summary
from engine.runs.run_dir import linked_file

FIX = ("Give a finished pipeline or evaluate run (`vlr-workbench runs` lists them), or the two files with --dsr CKPT "
       "--edgeface CKPT.")


@dataclass(frozen=True)
class ExportSource:
    dsr: Path
    recogniser: Path
    run: Path | None = None
    eval_file: Path | None = None
    evaluation: dict[str, Any] | None = None

    @property
    def protocol(self) -> dict[str, Any]:
        return (self.evaluation or {}).get("protocol") or {}


def from_files(dsr: str, edgeface: str) -> ExportSource:
    return ExportSource(Path(dsr).expanduser(), Path(edgeface).expanduser())


def run_preset_file(run: str | Path) -> Path:
    """A run directory's preset.toml; a WorkbenchError saying what to give when ``run`` is not a run."""
    preset = Path(run).expanduser() / "preset.toml"
    if not preset.is_file():
        raise WorkbenchError(f"{Path(run).expanduser()} is not a run directory (it has no preset.toml). {FIX}")
    return preset


def from_run(run: str | Path) -> ExportSource:
    run = run_preset_file(run).parent
    eval_file = _evaluation_file(run)
    evaluation = read_evaluation(eval_file, "Evaluate the run again, or export from --dsr and --edgeface.")
    protocol = evaluation.get("protocol") or {}
    dsr_named = protocol.get("dsr")
    if not dsr_named:
        raise WorkbenchError(f"{eval_file}: this evaluation scored no DSR probes (no DSR checkpoint), so there is no "
                             "DSR to export. Evaluate with a DSR checkpoint (--dsr, or train one with train-dsr), "
                             "or export from --dsr CKPT --edgeface CKPT.")
    row = (protocol.get("rows") or {}).get("dsr") or {}
    recogniser_named = row.get("recogniser_file") or protocol.get("recogniser")
    if not recogniser_named:
        raise WorkbenchError(f"{eval_file}: its protocol names no recogniser for the dsr row. {FIX}")
    return ExportSource(_existing(run, eval_file, dsr_named, "DSR checkpoint"),
                        _existing(run, eval_file, recogniser_named, "recogniser"), run, eval_file, evaluation)


def _evaluation_file(run: Path) -> Path:
    if (run / "eval.json").is_file():
        return run / "eval.json"
    summary = read_summary(run)
    if summary.get("eval_folds_json") or isinstance(summary.get("folds"), list):
        folds = sorted(p.parent for p in run.glob("fold_*/*/eval.json"))
        listed = "; ".join(str(p) for p in folds) or "none has finished yet"
        raise WorkbenchError(f"{run} is a pipeline with folds: each fold trained its own models, so there is no one "
                             f"model to export. Export one fold's evaluate run ({listed}).")
    found = linked_file(run, summary.get("eval_json"))
    if found is not None and found.is_file():
        return found
    if (run / "best.pt").is_file():
        raise WorkbenchError(f"{run} is a training run, not an evaluated pipeline: a deployed model needs a DSR "
                             f"checkpoint and the recogniser fine-tuned on its outputs. {FIX}")
    raise WorkbenchError(f"{run} has no evaluation yet (no eval.json; a pipeline writes it in its last stage): finish "
                         f"it (`vlr-workbench pipeline --resume {run}`) or evaluate it. {FIX}")


def _existing(run: Path, eval_file: Path, named: str, what: str) -> Path:
    """A file the evaluation names: as written, else relative to the run's runs folder (a moved runs folder)."""
    path = Path(named).expanduser()
    candidates = [path] + [base / path.parent.name / path.name for base in (run.parent, eval_file.parent.parent)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WorkbenchError(f"{eval_file} names the {what} {named}, which is gone. Put it back, or export from "
                         "--dsr CKPT --edgeface CKPT.")
