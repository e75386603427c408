"""User-facing errors.

A ``WorkbenchError`` carries one paragraph that names the file, key or path at fault and the fix.
The CLI prints it and exits with code 2; the app shows it in a notification. Anything else that
escapes is a bug and keeps its traceback.
"""


class WorkbenchError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class PresetError(WorkbenchError):
    """A preset file or a preset value is invalid."""


class DataError(WorkbenchError):
    """A dataset is missing, incomplete or holds images of the wrong size."""


class WeightsError(WorkbenchError):
    """A weight or checkpoint file is missing, corrupt or does not fit the model."""


class StorageError(WorkbenchError):
    """A file could not be written: the disk is full or read-only, or the directory is not writable."""


class StudyStorageLost(WorkbenchError):
    """A sweep's RDB study storage has not answered for longer than its controller waits (--storage-wait)."""


class JobStopped(Exception):
    """Raised inside a trainer when its stop flag is set; jobs catch it and finish cleanly.

    ``resume``: how to continue, when the stop came in a run the job waited on (its recogniser's
    pre-training) rather than in the job's own run, so that run holds the resumable checkpoint."""

    def __init__(self, resume: str = "") -> None:
        super().__init__(resume)
        self.resume = resume
