"""Where a study lives: Optuna's journal file under runs_dir/sweeps (one host), or an RDB server (several machines).

An RDB URL (``--storage``) is opened with a connection timeout and a liveness check on every pooled connection;
``postgresql://`` uses psycopg (3), the driver the ``[postgres]`` extra installs, when psycopg2 is absent. Two
controllers opening a fresh database at the same moment race in Optuna's schema creation (PostgreSQL raises a
unique violation on its catalogue); the loser waits a moment and opens the schema the winner made. Every failure
to reach the storage is one message naming the URL (its password masked), the cause and the fix.
"""

from __future__ import annotations

import importlib.util
import random
import re
import time
from pathlib import Path

from engine.errors import WorkbenchError

CONNECT_TIMEOUT_S = 10     # an unreachable server is an error after this, not a hang
SCHEMA_RACE_TRIES = 6      # fresh-database schema creation raced by another controller: tries before giving up
EXTRA = "pip install -c constraints.txt '.[postgres]'"


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs): ``USER:PASSWORD@`` (an empty user
    too) and a ``password=`` query parameter."""
    hidden = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", hidden, flags=re.IGNORECASE)


def rdb_url(url: str) -> str:
    """A PostgreSQL URL with the driver this installation has: ``postgresql://`` -> ``postgresql+psycopg://`` when
    psycopg (3) is installed and psycopg2 is not (SQLAlchemy's default for the bare scheme is psycopg2)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return url


def open_storage(url: str | None, journal: Path, wait_s: float | None = None, notify=None):
    """The storage of a study: the RDB at ``url`` (calls retried for ``wait_s`` while its server does not answer:
    engine/sweep/patient_storage.py), else the journal file ``journal`` (its folder made)."""
    if not url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        from engine.sweep.journal_check import check_journal

        check_journal(journal)                  # a damaged journal is refused before anything reads or writes it
        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    return _rdb(url, wait_s, notify)


def check_storage_url(url: str | None) -> None:
    """Refuse, before anything runs, an RDB URL that is not one or that names no lasting database: ``sqlite://``,
    ``sqlite:///`` and ``sqlite:///:memory:`` are in-memory databases that vanish with the controller."""
    if not url:
        return
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise WorkbenchError(f"--storage {masked(url)} is not a database URL: give postgresql://USER:PASSWORD@HOST:"
                             "PORT/DB (several machines), or leave --storage out for a journal file in "
                             "runs_dir/sweeps (one host).")
    database = rest.lstrip("/")
    if scheme.split("+")[0] == "sqlite" and (database.split("?")[0] in ("", ":memory:")
                                             or "mode=memory" in database):
        raise WorkbenchError(f"--storage {masked(url)} is an in-memory SQLite database: the study would vanish when this "
                             "controller exits, and no other process could join it. Leave --storage out for a "
                             "journal file in runs_dir/sweeps (one host, safe for parallel controllers), or give "
                             "postgresql://USER:PASSWORD@HOST:PORT/DB for several machines.")


def _rdb(url: str, wait_s: float | None, notify):
    from optuna.storages import RDBStorage

    check_storage_url(url)

    from engine.sweep.patient_storage import STORAGE_WAIT_S, PatientStorage

    full = rdb_url(url)
    engine_kwargs = {"pool_pre_ping": True}
    if full.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            return PatientStorage(RDBStorage(full, engine_kwargs=engine_kwargs), masked(url),
                                  STORAGE_WAIT_S if wait_s is None else wait_s, notify)
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's and the driver's errors, told apart by their text
            if _schema_race(exc) and attempt + 1 < SCHEMA_RACE_TRIES:
                time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))   # the other controller finishes its DDL
                continue
            raise storage_error(url, exc) from None
    raise AssertionError("unreachable")


def _schema_race(exc: Exception) -> bool:
    text = str(exc)
    return "UniqueViolation" in text or "pg_type_typname_nsp_index" in text or "already exists" in text \
        or "DuplicateTable" in text


def storage_error(url: str | None, exc: BaseException) -> WorkbenchError:
    """One message for a storage that cannot be opened: which storage, why, and what to do."""
    shown = masked(url) if url else "the journal file in runs_dir/sweeps"
    text = " ".join(str(exc).split())
    causes = (
        (("password authentication failed",), "the server refused the user or password",
         "check USER and PASSWORD in the URL (postgresql://USER:PASSWORD@HOST:PORT/DB)"),
        (("could not translate host name", "Name or service not known", "nodename nor servname",
          "failed to resolve host"), "the host name is unknown", "check HOST in the URL"),
        (("does not exist",), "the database does not exist on that server",
         "create it on the server (`createdb DB`, or CREATE DATABASE) or name one that exists"),
        (("Connection refused", "connection refused", "timeout expired", "timed out"),
         "no server answers at that host and port", "start the server, or check HOST:PORT and the firewall"),
    )
    if isinstance(exc, ImportError) or "No module named" in text:
        causes = ((("",), "its database driver is not installed", f"install it: {EXTRA}"),)
    for needles, why, fix in causes:
        if any(needle in text for needle in needles):
            return WorkbenchError(f"cannot open the study's storage {shown}: {why}. {fix[0].upper() + fix[1:]}; "
                                  "or leave --storage out for a journal file in runs_dir/sweeps (one host).")
    first = text[:300] or type(exc).__name__
    return WorkbenchError(f"cannot open the study's storage {shown} ({first}). Check the URL "
                          f"(postgresql://USER:PASSWORD@HOST:PORT/DB needs the psycopg driver: {EXTRA}, and a "
                          "reachable server), or leave --storage out for a journal file in runs_dir/sweeps.")
