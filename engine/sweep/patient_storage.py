"""An RDB study storage that rides out a server outage: every call retried with backoff, for a bounded time.

A PostgreSQL server restarted (or a network that drops for a moment) under running controllers makes each
storage call fail with a connection error. :class:`PatientStorage` wraps Optuna's ``RDBStorage``: a call that
fails because the connection is gone is tried again (0.5 s, 1 s, 2 s ... at most 10 s apart) until it succeeds
or ``wait_s`` have passed since the outage began; then :class:`StorageLost` is raised, naming the storage and
the cause. The controller tells the user once when an outage starts and once when the server answers again
(``notify``). Errors that are not about the connection (a bad value, a finished trial) are raised at once.

A write whose commit reached the server just before the connection dropped is not applied twice: a trial
state that is already stored is accepted as this call's own.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage

from engine.errors import StudyStorageLost as StorageLost

STORAGE_WAIT_S = 120.0    # how long a controller waits for its study's storage to answer again (--storage-wait)
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 10.0
CONNECTION_ERRORS = ("OperationalError", "InterfaceError", "DisconnectionError")


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it: Optuna wraps sqlalchemy's errors) says the connection is gone."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        module = type(exc).__module__
        if type(exc).__name__ in CONNECTION_ERRORS and module.startswith(("sqlalchemy", "psycopg")):
            return True
        if getattr(exc, "connection_invalidated", False):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    return text.split("[SQL:")[0].split("(Background on this error")[0].strip()[:200] or type(exc).__name__


class PatientStorage(BaseStorage):
    """``inner`` (an RDBStorage) with every public storage call retried while the server does not answer."""

    def __init__(self, inner: BaseStorage, shown_url: str, wait_s: float = STORAGE_WAIT_S,
                 notify: Callable[[str], None] | None = None):
        self.inner, self.shown_url, self.wait_s = inner, shown_url, float(wait_s)
        self.notify: Callable[[str], None] = notify or (lambda text: None)

    def __getattr__(self, name: str) -> Any:          # what BaseStorage does not declare (RDB's engine, url...)
        return getattr(self.__dict__["inner"], name)

    def patiently(self, name: str, args: tuple, kwargs: dict) -> Any:
        outage, delay = None, FIRST_DELAY_S
        while True:
            try:
                result = getattr(self.inner, name)(*args, **kwargs)
            except UpdateFinishedTrialError:
                if outage is not None and name == "set_trial_state_values":
                    return True                       # the try before the drop committed it
                raise
            except Exception as exc:  # noqa: BLE001 - the driver's and sqlalchemy's errors, told apart below
                if not connection_lost(exc):
                    raise
                now = time.monotonic()
                if outage is None:
                    outage = now
                    self.notify(f"the study's storage {self.shown_url} does not answer ({_cause(exc)}): trying "
                                f"again for up to {self.wait_s:.0f} s")
                if now - outage >= self.wait_s:
                    raise StorageLost(f"the study's storage {self.shown_url} has not answered for "
                                      f"{now - outage:.0f} s ({_cause(exc)})") from None
                time.sleep(min(delay, max(0.0, self.wait_s - (now - outage))))
                delay = min(2 * delay, MAX_DELAY_S)
                continue
            if outage is not None:
                self.notify(f"the study's storage {self.shown_url} answers again after "
                            f"{time.monotonic() - outage:.0f} s: the sweep goes on")
            return result


def _forwarded(name: str):
    def call(self, *args, **kwargs):
        return self.patiently(name, args, kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{name}`` of the wrapped storage, retried while its server does not answer."
    return call


for _name, _ in inspect.getmembers(BaseStorage, inspect.isfunction):
    if not _name.startswith("_"):
        setattr(PatientStorage, _name, _forwarded(_name))
PatientStorage.__abstractmethods__ = frozenset()
