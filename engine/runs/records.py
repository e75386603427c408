"""The one reader of a run directory's files: run directories are untrusted input (copied, synced, edited,
half written by killed processes), so every reader here is total.

Each file has a schema (``METRICS``, ``PROGRESS``, ``LOG``, ``STATUS``, ``OWNER``, ``SUMMARY``, ``EVAL``,
``EVAL_FOLDS``): a JSON-lines record that is not UTF-8, not JSON, not an object or has a field of the wrong type
is skipped with a warning naming the file and line (once per process: ``warn``); a JSON object file
(status.json, summary.json, owner.lock, eval.json, eval_folds.json) that cannot be read counts as absent, with
a warning, and a field of the wrong type in it, at any depth (``intervals.rows.dsr``), is left out with a
warning naming it, so a reader finds each part it gets well typed; ``key_file_problems`` says why a run is
``damaged``. A metric's NaN or infinity (Python's json writes ``NaN``, ``Infinity``) is data, not damage.
``samples/epoch_NNN.png`` strips are listed by ``sample_strips`` and decoded by ``read_image`` (a junk file:
None). Only a resume reads strictly (``strict=True``: a damaged line is a ``WorkbenchError``),
since it rewrites the files.

Kept apart from ``run_dir`` (which writes them) so that readers (the runs table, tips, reports, the TensorBoard
export, ``attach``) depend on reading alone.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from engine.errors import WorkbenchError

LOG = logging.getLogger("vlr_workbench.run_files")
MAX_OBJECT_BYTES = 64 * 2 ** 20     # a status/summary/eval/lock file bigger than this is not one we wrote
_EPOCH = re.compile(r"^epoch_(\d{1,9})\.png$")

# A schema: field -> accepted kinds; "*" = the kinds of every other field (absent: anything). A kind is a name
# below or a nested schema (the value is an object whose fields are checked in turn); a nested schema's "!"
# lists the fields it cannot do without. NUMBER is finite; FLOAT also NaN and the infinities (a metric's value).
NUMBER, FLOAT, INT, STR, BOOL, NULL, DICT, LIST = "number", "float", "int", "str", "bool", "null", "dict", "list"
NUMBERS, PAIR, REQUIRED = "list of numbers", "[low, high]", "!"
METRICS = {"job": (STR,), "stage": (STR, NULL), "epoch": (INT, NULL), "step": (NUMBER, NULL),
           "split": (STR, NULL), "time": (NUMBER, NULL), "error": (STR,), "event": (STR,),
           "*": (FLOAT, NULL)}
PROGRESS = {"job": (STR,), "stage": (STR, NULL), "epoch": (INT,), "epochs": (INT, NULL), "step": (INT,),
            "steps": (INT, NULL), "global_step": (INT,), "images_per_second": (NUMBER,),
            "eta_seconds": (NUMBER, NULL), "loss": (NUMBER, NULL), "time": (NUMBER,)}
LOG_LINE = {"job": (STR,), "level": (STR,), "message": (STR,), "time": (NUMBER,)}
STATUS = {"state": (STR,), "pid": (INT,), "host": (STR,), "job": (STR,), "stage": (STR, NULL), "epoch": (INT,),
          "epochs": (INT, NULL), "step": (INT,), "steps": (INT, NULL), "heartbeat": (NUMBER,),
          "started": (NUMBER,), "world_size": (INT,), "message": (STR,), "stage_run": (STR,), "part": (INT,),
          "parts": (INT,), "overall_eta_seconds": (NUMBER, NULL), "images_per_second": (NUMBER,)}
OWNER = {"pid": (INT,), "host": (STR,), "time": (NUMBER,)}
SUMMARY = {"stopped": (BOOL,), "stages": (DICT,), "stage_runs": (DICT,), "folds": (LIST,), "job": (STR,),
           "eval_json": (STR, NULL), "eval_folds_json": (STR, NULL), "data_root": (STR, NULL)}

# eval.json (engine.evaluation.evaluate.eval_document): rows by name (null: not scored), protocol, intervals,
# comparisons. eval_folds.json (engine.evaluation.folds.aggregate): each row's metrics over the folds.
EVAL_CAMERA = {"protocol": (STR,), "probes": (STR, NULL), "dataset": (STR, NULL), "training": (STR, NULL),
               "probe_seed": (INT, NULL)}
EVAL_PROTOCOL = {
    "split": (STR,), "data_root": (STR, NULL), "subjects": (INT,), "gallery_images": (INT,),
    "gallery_per_subject": (INT,), "gallery_subjects": (INT,), "probes": (INT,), "threshold": (NUMBER,),
    "seed": (INT,), "vlr_size": (LIST,), "hr_size": (INT,), "recogniser": (STR,), "recogniser_source": (STR,),
    "recogniser_variant": (STR, NULL), "dsr": (STR, NULL), "dsr_source": (STR,), "ties": (STR,), "notes": (STR,),
    "recognisers": ({"*": ({"file": (STR,), "source": (STR,), "variant": (STR, NULL)},)},),
    "rows": ({"*": ({"probes": (STR,), "recogniser": (STR,), "recogniser_file": (STR,)},)},),
    "distractors": (INT,), "distractor_source": (STR, NULL), "distractor_files": (LIST,), "camera": (EVAL_CAMERA,)}
EVAL_INTERVALS = {"method": (STR,), "resamples": (INT,), "seed": (INT,), "level": (NUMBER,), "unit": (STR,),
                  "verification": (STR,), "rows": ({"*": ({"*": (PAIR, NULL)},)},)}
EVAL_COMPARISON = {"a": (STR,), "b": (STR,), "metric": (STR,), "label": (STR,), "difference": (NUMBER, NULL),
                   "interval": (PAIR, NULL), "significant": (BOOL,),
                   "mcnemar": ({"a_only": (INT,), "b_only": (INT,), "p": (NUMBER, NULL)},)}
# a row's curves: cmc = rank-k identification rates, roc = {"far": [...], "tar": [...]}
EVAL_ROW = {"cmc": (NUMBERS,), "roc": ({"far": (NUMBERS,), "tar": (NUMBERS,), REQUIRED: ("far", "tar")},),
            "*": (NUMBER, NULL)}
EVAL = {"protocol": (EVAL_PROTOCOL,), "intervals": (EVAL_INTERVALS,), "comparisons": ({"*": (EVAL_COMPARISON,)},),
        "*": (NULL, EVAL_ROW)}
FOLD_STAT = {"mean": (NUMBER,), "std": (NUMBER,), "min": (NUMBER,), "max": (NUMBER,), "n": (INT,),
             "values": (NUMBERS,), REQUIRED: ("mean", "std", "min", "max", "n", "values")}
FOLD_COMPARISON = {"a": (STR,), "b": (STR,), "difference": (FOLD_STAT,), "significant_folds": (INT,),
                   REQUIRED: ("difference",)}
EVAL_FOLDS = {"folds": (INT,), "seed": (INT,), "files": (LIST,), "test_subjects": (LIST,),
              "camera": (NULL, EVAL_CAMERA), "rows": ({"*": ({"*": (FOLD_STAT,)},)},),
              "comparisons": ({"*": (FOLD_COMPARISON,)},)}


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _kind_ok(value: Any, kind: str | dict) -> bool:
    if isinstance(kind, dict):
        return isinstance(value, dict) and all(key in value for key in kind.get(REQUIRED, ()))
    if kind == NULL:
        return value is None
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (NUMBER, FLOAT):
        return _finite_number(value) or kind == FLOAT and isinstance(value, float)
    if kind in (NUMBERS, PAIR):
        return (isinstance(value, list) and all(map(_finite_number, value))
                and (kind == NUMBERS or len(value) == 2 and value[0] <= value[1]))
    return isinstance(value, {STR: str, DICT: dict, LIST: list}[kind])


def _field_problem(name: str, value: Any, kinds: tuple) -> str:
    names = [("object with " + ", ".join(k[REQUIRED]) if REQUIRED in k else "object") if isinstance(k, dict)
             else k for k in kinds]
    return f"field {name!r} is {json.dumps(value)[:40]}, expected {' or '.join(names)}"


def schema_problem(record: dict[str, Any], schema: dict[str, tuple]) -> str:
    """Why ``record`` does not fit ``schema`` ("" when it does): the first field of a wrong type."""
    for key, value in record.items():
        kinds = schema.get(key, schema.get("*"))
        if kinds is not None and not any(_kind_ok(value, kind) for kind in kinds):
            return _field_problem(key, value, kinds)
    return ""


_warned: set[tuple[str, int | None, str]] = set()


def warn(path: Path, line: int | None, reason: str, what: str = "skipped") -> None:
    """Say once per process that part of a run file was damaged and left out."""
    key = (str(path), line, reason)
    if key in _warned:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned.add(key)
    where = f"{path} line {line}" if line is not None else str(path)
    LOG.warning("%s: %s (%s)", where, reason, what)


class _StderrHandler(logging.Handler):
    """``warning: ...`` on the current sys.stderr (a front end that captures it, e.g. Textual, gets it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"warning: {record.getMessage()}\n")
        except (OSError, ValueError):
            pass


if not LOG.handlers:
    LOG.addHandler(_StderrHandler())
    LOG.propagate = False


def _parse_line(raw: bytes, schema: dict) -> tuple[dict[str, Any] | None, str]:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (ValueError, RecursionError):
        return None, "not a JSON record"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    problem = schema_problem(record, schema)
    return (None, problem) if problem else (record, "")


def parse_lines(path: Path, chunk: bytes, schema: dict, *, first_line: int = 1, strict: bool = False,
                torn_ok: bool = True) -> list[dict[str, Any]]:
    """The records of ``chunk`` (whole lines of a JSON-lines file from line ``first_line``); a damaged line is
    skipped with a warning (``strict``: a WorkbenchError). A last line without its newline that does not parse
    is a record being written: left out quietly when ``torn_ok``."""
    lines = chunk.split(b"\n")
    torn = lines.pop() if lines else b""          # after the last newline: b"" for a whole file
    records = []
    for number, raw in enumerate(lines + ([torn] if torn.strip() else []), start=first_line):
        if not raw.strip():
            continue
        record, problem = _parse_line(raw, schema)
        if record is not None:
            records.append(record)
        elif raw is torn and torn_ok:
            continue
        elif strict:
            raise WorkbenchError(f"{path} line {number} is damaged ({problem}). The file was damaged or edited; "
                                 "delete that line (or restore the file from a copy), then resume again.")
        else:
            warn(path, number, problem)
    return records


def read_lines(path: Path, schema: dict, *, strict: bool = False) -> list[dict[str, Any]]:
    """Every record of a JSON-lines run file ([] when it is absent or not a readable file, with a warning)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    try:
        if not path.is_file():
            raise OSError("not a regular file")
        data = path.read_bytes()
    except OSError as exc:
        if strict:
            raise WorkbenchError(f"{path}: cannot read it ({exc.strerror or exc}). Restore it from a copy or "
                                 "remove it, then resume again.") from None
        warn(path, None, f"cannot read it ({exc.strerror or exc})")
        return []
    return parse_lines(path, data, schema, strict=strict)


def first_record(path: Path, schema: dict) -> dict[str, Any]:
    """The first line of a JSON-lines file as a record ({} when there is none or it is damaged)."""
    try:
        with open(path, "rb") as handle:
            line = handle.readline(1 << 20) if Path(path).is_file() else b""
    except OSError:
        return {}
    found = parse_lines(Path(path), line, schema)
    return found[0] if found else {}


def read_metrics(run_dir: str | Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """Records of metrics.jsonl (``METRICS``); a truncated last line (a run still writing) is left out."""
    return read_lines(Path(run_dir) / "metrics.jsonl", METRICS, strict=strict)


def read_object(path: Path, schema: dict | None = None) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object of ``path`` with its wrongly typed fields left out, problem): (None, "") when the file
    is absent; (None, why) when it cannot be read as an object (warned)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None, ""
    try:
        if not path.is_file():
            raise OSError("not a regular file")
        if path.stat().st_size > MAX_OBJECT_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, too big for this file")
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        problem = f"cannot read it ({exc.strerror or exc})"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except (ValueError, RecursionError) as exc:
        problem = f"not JSON ({str(exc)[:80]})"
    else:
        if not isinstance(doc, dict):
            problem = f"a JSON {type(doc).__name__}, not an object"
        else:
            return _typed_fields(path, doc, schema), ""
    warn(path, None, problem, "ignored")
    return None, problem


def _typed_fields(path: Path, doc: dict[str, Any], schema: dict | None, where: str = "") -> dict[str, Any]:
    """``doc`` without its fields of a wrong type, at any depth (each left out with a warning naming it)."""
    if not schema:
        return doc
    kept = {}
    for key, value in doc.items():
        kinds = schema.get("*") if key == REQUIRED else schema.get(key, schema.get("*"))
        fitted = value if kinds is None else _fitted(path, f"{where}{key}", value, kinds)
        if fitted is not _LEFT_OUT:
            kept[key] = fitted
    return kept


_LEFT_OUT = object()


def _fitted(path: Path, name: str, value: Any, kinds: tuple) -> Any:
    """``value`` as the first of ``kinds`` it fits (an object with its own fields checked, whole enough for
    its schema's required fields), or ``_LEFT_OUT`` (warned)."""
    for kind in kinds:
        if isinstance(kind, dict) and isinstance(value, dict):
            checked = _typed_fields(path, value, kind, name + ".")
            if all(field in checked for field in kind.get(REQUIRED, ())):
                return checked
        elif not isinstance(kind, dict) and _kind_ok(value, kind):
            return value
    warn(path, None, _field_problem(name, value, kinds), "field ignored")
    return _LEFT_OUT


def read_status(run_path: str | Path) -> dict[str, Any]:
    """The run's status.json (``STATUS``; wrongly typed fields left out), or {} when absent or unreadable."""
    return read_object(Path(run_path) / "status.json", STATUS)[0] or {}


def read_owner(lock_path: Path) -> dict[str, Any]:
    """owner.lock (``OWNER``), or {} when absent or unreadable."""
    return read_object(lock_path, OWNER)[0] or {}


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary.json (``SUMMARY``; wrongly typed fields left out), or {} when absent or unreadable."""
    return read_object(Path(run_dir) / "summary.json", SUMMARY)[0] or {}


def read_json_object(path: Path, fix: str, schema: dict | None = None) -> dict[str, Any]:
    """A JSON object file a command is asked about: unreadable, malformed or not an object is an error naming
    the file, with ``fix`` as the advice; fields of a wrong type for ``schema`` are left out (warned)."""
    doc, problem = read_object(path, schema)
    if doc is None:
        raise WorkbenchError(f"{path}: {problem or 'it does not exist'}. {fix}")
    return doc


def read_evaluation(path: Path, fix: str | None = None) -> dict[str, Any] | None:
    """eval.json (``EVAL``: ``{"dsr": {"rank1": 0.6, ...}, "protocol": {...}, ...}``) with every part of a
    wrong type left out (warned); None when absent or unreadable (warned), an error with ``fix`` when given."""
    return read_object(path, EVAL)[0] if fix is None else read_json_object(path, fix, EVAL)


def read_fold_evaluation(path: Path, fix: str | None = None) -> dict[str, Any] | None:
    """eval_folds.json (``EVAL_FOLDS``), like :func:`read_evaluation`."""
    return read_object(path, EVAL_FOLDS)[0] if fix is None else read_json_object(path, fix, EVAL_FOLDS)


def key_file_problems(run_path: str | Path) -> list[str]:
    """Why a run's key files cannot be read (status.json, summary.json, metrics.jsonl): [] for a sound run."""
    run_path = Path(run_path)
    problems = []
    for name in ("status.json", "summary.json"):
        _doc, problem = read_object(run_path / name)
        if problem:
            problems.append(f"{name}: {problem}")
    state = read_status(run_path).get("state")
    if (run_path / "status.json").is_file() and not problems and state not in (
            "running", "finished", "stopped", "failed"):
        problems.append(f"status.json: no valid state ({json.dumps(state)[:40]})")
    metrics = run_path / "metrics.jsonl"
    if (metrics.exists() or metrics.is_symlink()) and not metrics.is_file():
        problems.append("metrics.jsonl: not a readable file")
    return problems


def stage_dirs(run_path: str | Path) -> list[Path]:
    """The stage run directories a pipeline's summary.json names (as stored, or found by name beside the
    pipeline or in its fold folder). A pipeline with folds names fold folders as its stages: its stage runs are
    then the last fold's (``stage_runs``)."""
    run_path = Path(run_path)
    summary = read_summary(run_path)
    found: list[Path] = []
    for key in ("stages", "stage_runs"):
        table = summary.get(key)
        for stored in (table.values() if isinstance(table, dict) else ()):
            if not isinstance(stored, str) or not stored:
                continue
            stored_path = Path(stored)
            for candidate in (stored_path, run_path.parent / stored_path.name,
                              run_path / stored_path.parent.name / stored_path.name):
                if (candidate / "preset.toml").is_file():
                    if candidate.resolve() not in {f.resolve() for f in found}:
                        found.append(candidate)
                    break
    return found


def sample_strips(folders: Iterable[str | Path]) -> list[tuple[int, Path]]:
    """(epoch, png) of the ``samples/epoch_NNN.png`` files of the first of ``folders`` that has any, by epoch
    (other names and anything but a file are left out)."""
    for folder in folders:
        samples = Path(folder) / "samples"
        try:
            names = sorted(p.name for p in samples.iterdir()) if samples.is_dir() else []
        except OSError:
            names = []
        found = sorted((int(m.group(1)), samples / name) for name in names if (m := _EPOCH.match(name))
                       and (samples / name).is_file())
        if found:
            return found
    return []


def read_image(path: Path):
    """An RGB PIL image of a sample strip, or None (warned) when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, bombs...) for junk
        warn(path, None, f"not a readable image ({type(exc).__name__})")
        return None


def progress_step(raw: str | bytes) -> float:
    """The global step of a progress.jsonl line (a torn, damaged or foreign line: infinity)."""
    record, _problem = _parse_line(raw.encode() if isinstance(raw, str) else raw, PROGRESS)
    return record["global_step"] if record is not None and "global_step" in record else math.inf
