"""An out-of-memory error becomes a line in metrics.jsonl (read by engine.tips) and a user error."""

from __future__ import annotations

from engine.errors import WorkbenchError
from engine.runs.run_dir import RunDir

# The guide's "If OOM Occurs" batch sizes.
GUIDE_OOM_BATCH = {"dsr.batch_size": 12, "finetune.batch_size": 24}


def out_of_memory(run: RunDir, job: str, stage: str, epoch: int, batch_key: str, batch_size: int,
                  exc: BaseException) -> WorkbenchError:
    """Record the OOM in the run and return the error to raise."""
    run.log_error(job, stage, epoch, f"out of memory at {batch_key} = {batch_size}: {exc}")
    return WorkbenchError(
        f"out of memory in {job} ({stage}, epoch {epoch}) with {batch_key} = {batch_size}. Lower {batch_key} "
        f"(the guide: {GUIDE_OOM_BATCH[batch_key]}, or the next step down): `vlr-workbench tips {run.path}` "
        "proposes the change and `--apply N --save-as NAME` saves it; then start the job again.")
