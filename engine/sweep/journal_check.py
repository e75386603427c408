"""A study's journal file is untrusted input: read it whole before Optuna does (or writes to it).

Optuna's journal is one JSON record per line. Bytes that are not UTF-8, a line that is not a record, or a last
record cut short (a write interrupted by a crash or a full disk: Optuna would drop it silently, and the next
write would land after the broken bytes) make the study unreadable as written. Each is one message naming the
file and the byte where the damage starts, and nothing is written to the file. A last line being written by a
live controller at this moment looks cut too: it is read again after a moment before it is called damage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.errors import WorkbenchError

SETTLE_S = 1.0      # how long a cut last record gets to be completed by a writer before it is called damage


def check_journal(journal: Path) -> None:
    """Nothing when ``journal`` is a whole, readable journal (or missing); else a WorkbenchError."""
    try:
        data = journal.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise WorkbenchError(f"study journal {journal} cannot be read ({exc.strerror or exc}).") from None
    cut = _first_damage(journal, data)
    if cut is not None and cut[1] == "cut":
        time.sleep(SETTLE_S)                   # a writer finishing its record
        data = journal.read_bytes()
        cut = _first_damage(journal, data)
    if cut is not None:
        raise WorkbenchError(cut[0])


def _first_damage(journal: Path, data: bytes) -> tuple[str, str] | None:
    offset = 0
    fix = (f"Keep a copy, then cut the file before that byte (`truncate -s {{at}} {journal}`: the records after it "
           "are lost) or start a new study with another --study.")
    lines = data.split(b"\n")
    for number, line in enumerate(lines):
        last = number == len(lines) - 1
        if last and not line:
            return None
        try:
            text = line.decode("utf-8")
            record = json.loads(text)
            if not isinstance(record, dict) or "op_code" not in record:
                raise ValueError("not a journal record")
        except UnicodeDecodeError as exc:
            at = offset + exc.start
            return (f"study journal {journal}: byte {at} (line {number + 1}) is not UTF-8 text; a journal is JSON "
                    f"records, one per line, so the file was damaged or is not a journal. {fix.format(at=offset)}",
                    "bytes")
        except ValueError:
            if last:
                return (f"study journal {journal} ends in a record cut short at byte {offset} (line {number + 1}, "
                        f"{len(line)} bytes and no line end): a write was interrupted, and that change is lost. "
                        f"{fix.format(at=offset)}", "cut")
            return (f"study journal {journal}: line {number + 1} (byte {offset}) is not a journal record. "
                    f"{fix.format(at=offset)}", "line")
        offset += len(line) + 1
    return None
