"""Where a study's files live under ``runtime.runs_dir``: ``sweeps/STUDY.journal`` (the Optuna journal,
unless an RDB ``--storage`` holds the study) and ``sweeps/STUDY/`` (this host's controller status and
stop request, its output, and the base preset the study was started from, ``sweeps/STUDY/PRESET.toml``).

The config directory's ``studies.json`` indexes the studies started on this host: study -> its runs
directory, so that a command naming only the study finds it whatever the base preset's runs_dir
(``engine.sweep.finding``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.errors import PresetError, WorkbenchError
from engine.io import atomic
from engine.presets.preset import NAME_RULE, check_name, quote
from engine.presets.store import config_dir
from engine.runs.run_dir import runs_root

INDEX_FILE = "studies.json"
INDEX_LIMIT = 200          # the most recently started studies kept in the index


def check_study_name(name: str) -> str:
    """``name`` when it is a study name (the preset naming rule: it names files under runs_dir/sweeps, so ``..``
    or ``a/b`` would write elsewhere); else a WorkbenchError."""
    try:
        return check_name(name, "the study name")
    except PresetError:
        raise WorkbenchError(f"study name {quote(name)}: a study name is {NAME_RULE} (it names the study's files in "
                             "runs_dir/sweeps). Give --study NAME, e.g. --study lr-search.") from None


def sweeps_dir(runs_dir: str | Path) -> Path:
    return runs_root(runs_dir) / "sweeps"


def journal_path(runs_dir: str | Path, study: str) -> Path:
    return sweeps_dir(runs_dir) / f"{study}.journal"


def control_dir(runs_dir: str | Path, study: str) -> Path:
    """``runs_dir/sweeps/STUDY/``, made if missing."""
    folder = sweeps_dir(runs_dir) / check_study_name(study)
    if os.path.lexists(folder) and not folder.is_dir():
        raise WorkbenchError(f"{folder} is a file, where study {study}'s control folder (its controller's status and "
                             "stop request) goes: move that file away, or give another --study.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def base_preset_file(runs_dir: str | Path, study: str, preset_name: str) -> Path:
    """``sweeps/STUDY/PRESET.toml``: the base preset as the study was last started with it (not made here)."""
    return sweeps_dir(runs_dir) / study / f"{preset_name}.toml"


def index_path() -> Path:
    return config_dir() / INDEX_FILE


def read_index() -> tuple[dict[str, dict], str]:
    """({study: {"runs_dir": absolute path}}, '' or why the index was ignored: damaged or unreadable)."""
    path = index_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, f"{path} could not be read ({type(exc).__name__}) and was ignored"
    studies = doc.get("studies") if isinstance(doc, dict) else None
    if not isinstance(studies, dict):
        return {}, f"{path} holds no \"studies\" table and was ignored"
    return {name: entry for name, entry in studies.items()
            if isinstance(entry, dict) and isinstance(entry.get("runs_dir"), str)}, ""


def remember_study(study: str, runs_dir: str | Path) -> str:
    """Record ``study`` -> its runs directory (absolute) in the index, atomically; '' when done, else a warning
    (a config directory that cannot be written: the study is still found through the presets' runs_dirs)."""
    studies, _problem = read_index()
    studies.pop(study, None)
    studies[study] = {"runs_dir": str(runs_root(runs_dir).resolve())}
    try:
        atomic.write_json(index_path(), {"studies": dict(list(studies.items())[-INDEX_LIMIT:])})
    except (WorkbenchError, OSError) as exc:
        return (f"could not record study {study} in {index_path()} ({exc}); `sweep show {study}` and `report "
                f"{study}` find it through the presets' runs_dirs, or with --preset P")
    return ""
