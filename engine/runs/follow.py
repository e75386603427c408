"""Follow a run started anywhere (headless, under torchrun, by another app) from its directory alone.

``RunFollower.poll()`` turns what the owning process writes (metrics.jsonl, log.jsonl,
progress.jsonl, status.json, samples/*.png) into the events a job emits, so a front end shows an
attached run exactly like one it started: Metrics, Logs and Progress (loss, rate, ETA) as they are
appended (a job without progress.jsonl: a Progress from each new status), a Samples per
new strip, and Finished (or Failed) once the status says the run ended or its process is gone. A
pipeline run is followed through the stage run it is in.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.events import Event, Failed, Finished, Log, Metrics, Progress, Samples
from engine.runs.records import LOG_LINE, METRICS, PROGRESS, parse_lines, read_summary, sample_strips
from engine.runs.status import read_status, run_state
from engine.runs.run_dir import LOG_FILE, PROGRESS_FILE, RunDir

METRIC_FIELDS = ("job", "stage", "epoch", "step", "split", "time")


class _Tail:
    """New complete lines of an append-only JSON-lines file since the last read."""

    def __init__(self, path: Path, schema: dict) -> None:
        self.path, self.schema, self.offset, self.line = path, schema, 0, 1

    def read(self) -> list[dict]:
        try:
            if not self.path.is_file():
                return []
            if self.path.stat().st_size < self.offset:   # rewritten shorter (a resume truncated it): read again
                self.offset, self.line = 0, 1
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1          # a line still being written waits for the next poll
        self.offset += end
        records = parse_lines(self.path, chunk[:end], self.schema, first_line=self.line)
        self.line += chunk[:end].count(b"\n")
        return records


def _progress(record: dict) -> Progress:
    """A progress.jsonl record (checked against ``PROGRESS``) as the Progress it was written from."""
    eta, loss = record.get("eta_seconds"), record.get("loss")
    return Progress(record.get("job", ""), record.get("stage") or "", record.get("epoch") or 0,
                    record.get("epochs") or 0, record.get("step") or 0, record.get("steps") or 0,
                    float(record.get("images_per_second") or 0.0), None if eta is None else float(eta),
                    None if loss is None else float(loss))


class RunFollower:
    def __init__(self, run_path: str | Path) -> None:
        self.root = RunDir.open(run_path).path
        self._tails: dict[Path, tuple[_Tail, _Tail, _Tail]] = {}
        self._samples: set[Path] = set()
        self._last_status: tuple | None = None
        self.ended = False

    def _current_dir(self) -> Path:
        """The directory being written: the run itself, a pipeline's current stage run, or the run a job
        writes before its own (``stage_run``: the recogniser pre-training of a train-dsr or finetune)."""
        status = read_status(self.root)
        stage_run = status.get("stage_run")
        if isinstance(stage_run, str) and Path(stage_run).is_dir():
            return Path(stage_run)
        if status.get("job") == "pipeline":
            stage_runs = read_summary(self.root).get("stage_runs", {})
            stage = status.get("stage")
            if isinstance(stage_runs.get(stage), str) and Path(stage_runs[stage]).is_dir():
                return Path(stage_runs[stage])
        return self.root

    def poll(self) -> list[Event]:
        """Events written since the last poll (the first poll replays the run so far)."""
        if self.ended:
            return []
        folder = self._current_dir()
        metrics, logs, progress = self._tails.setdefault(
            folder, (_Tail(folder / "metrics.jsonl", METRICS), _Tail(folder / LOG_FILE, LOG_LINE),
                     _Tail(folder / PROGRESS_FILE, PROGRESS)))
        events: list[Event] = [Log(r.get("job", ""), r.get("message", ""), r.get("level", "info")) for r in logs.read()]
        for record in metrics.read():
            if record.get("split") in (None, "error"):
                continue
            values = {k: float(v) if v is not None else float("nan") for k, v in record.items()
                      if k not in METRIC_FIELDS and isinstance(v, (int, float, type(None)))}
            events.append(Metrics(record.get("job", ""), record.get("stage") or "", record.get("epoch") or 0,
                                  int(record.get("step") or 0), record["split"], values))
        for epoch, path in sample_strips([folder]):
            if path not in self._samples:
                self._samples.add(path)
                events.append(Samples(read_status(folder).get("job", ""), epoch, path))
        events.extend(_progress(record) for record in progress.read() if record.get("steps"))
        status = read_status(folder)
        key = (status.get("stage"), status.get("epoch"), status.get("step"))
        if (status and status.get("state") == "running" and key != self._last_status and status.get("steps")
                and not (folder / PROGRESS_FILE).is_file()):     # a job that writes no progress.jsonl: the status
            self._last_status = key
            events.append(Progress(status.get("job", ""), status.get("stage") or "", int(status.get("epoch") or 0),
                                   int(status.get("epochs") or 0), int(status.get("step") or 0),
                                   int(status.get("steps") or 0), float(status.get("images_per_second") or 0.0)))
        if folder != self.root:
            events = self._as_part_of_root(events)
        events.extend(self._end())
        return events

    def _as_part_of_root(self, events: list[Event]) -> list[Event]:
        """A stage run's progress with the pipeline's stage n/N and overall ETA (from the pipeline's status)."""
        status = read_status(self.root)
        part, parts, overall = status.get("part"), status.get("parts"), status.get("overall_eta_seconds")
        if not (isinstance(part, int) and isinstance(parts, int)):
            return events
        overall = float(overall) if isinstance(overall, (int, float)) else None
        return [replace(e, part=part, parts=parts, overall_eta_seconds=overall) if isinstance(e, Progress) else e
                for e in events]

    def _end(self) -> list[Event]:
        state = run_state(self.root)
        if state in ("running", "unknown"):
            return []
        self.ended = True
        status = read_status(self.root)
        job = status.get("job", "")
        if state == "failed":
            return [Failed(job, status.get("message") or "the run failed (see its log)")]
        if state == "dead":
            return [Failed(job, f"the process of {self.root} is gone (killed or crashed) without ending the run; "
                                f"`vlr-workbench {job} --resume {self.root}` continues it")]
        return [Finished(job, self.root, read_summary(self.root), stopped=state == "stopped")]
