"""The run-file reader's warnings in the app: what ``engine.runs.records`` says about a damaged run file (a line
skipped, a field ignored) goes to the Log tab and, once per run directory, to a toast, instead of Textual's
captured stderr."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.runs.records import LOG
from workbench.app import messages as msg


def warned_run(record: logging.LogRecord) -> str:
    """The run directory a warning is about (the folder of the file it names)."""
    where = str(record.args[0]) if isinstance(record.args, tuple) and record.args else record.getMessage()
    return str(Path(where.split(" line ")[0]).parent)


class RunWarnings(logging.Handler):
    def __init__(self, app) -> None:
        super().__init__(logging.WARNING)
        self.app = app
        self.told: set[str] = set()      # runs a toast has named already

    def install(self) -> None:
        LOG.addHandler(self)

    def remove(self) -> None:
        LOG.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Any thread (the runs table reads in one): a message to the main screen, which is thread-safe."""
        news = self.app.jobs.news
        if news is None:
            return
        run = warned_run(record)
        news.post_message(msg.LogLine(f"warning: {record.getMessage()}", "yellow"))
        if run not in self.told:
            self.told.add(run)
            news.post_message(msg.RunFileWarning(run, record.getMessage()))
