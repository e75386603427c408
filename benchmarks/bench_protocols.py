"""The protocol matrix (issue 38): one preset measured on several protocols, DSR against the best bicubic row.

    python benchmarks/bench_protocols.py --faces ../shared/faces/lfw-dev --preset cpu-real --out bench-protocols \\
        [--vlr 16x16 32x32] [--unlabelled yes no] [--distractors 1000 0] [--weights xs xxs] [--seeds 0 1] \\
        [--design one-at-a-time | full] [--weights-dir ../shared/weights] [--threads 2] [--set KEY=VALUE ...]

The factors of a cell, each list's first value being the reference protocol:
  unlabelled   DSR also trains on the unlabelled faces (FACES/singles, ``dsr.unlabelled``) or not;
  distractors  gallery identities with no probe (``--distractors``); a cell that differs from a measured one only
               here re-scores that cell's models with ``evaluate`` (nothing is trained again);
  weights      the authors' EdgeFace XS or XXS as the base recogniser (``runtime.edgeface_*``);
  seeds        the split seed of ``prepare`` (another draw of test people);
  vlr          the VLR size (``data.vlr_*``; the preset's other keys unchanged, as cpu-real-32 is made).
``one-at-a-time`` (the default) measures, at every VLR size, the reference cell and each factor changed alone;
``full`` every combination. Each dataset is made once (``prepare FACES/labelled ... --unlabelled FACES/singles
--distractors MAX``: every cell of a split seed sees the same people, unlabelled faces and distractors), each
cell is one ``pipeline --baselines`` run (one split: its paired 95% interval and McNemar test), run one after
another with the CLI a user types (printed). OUT/cells.json records every finished cell: running the same
command again measures only the cells not yet measured. The table (markdown) is printed at the end and written
to OUT/matrix.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import presets as P  # noqa: E402
from engine.evaluation.wording import finite, p_text  # noqa: E402
from engine.io import atomic  # noqa: E402
from engine.sweep.margins import paired_margin, points_text  # noqa: E402
from engine.sweep.objective import run_evaluation  # noqa: E402
from workbench.cli.main import main as cli  # noqa: E402
from workbench.cli.presets_cmd import parse_assignment  # noqa: E402

VARIANTS = {"xs": "edgeface_xs", "xxs": "edgeface_xxs"}
HEADER = ["cell", "VLR", "differs from the reference", "DSR rank-1", "best bicubic rank-1", "margin (points)",
          "McNemar p", "DSR beyond noise"]


@dataclass(frozen=True)
class Cell:
    vlr: str
    seed: int
    weights: str
    unlabelled: bool
    distractors: int

    @property
    def name(self) -> str:
        return f"{self.training}-d{self.distractors}"

    @property
    def training(self) -> str:
        """The models' name: cells that differ only in distractors share them."""
        return f"{self.vlr}-seed{self.seed}-{self.weights}-{'unl' if self.unlabelled else 'nounl'}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", required=True, help="a folder with labelled/ (one folder per person) and singles/")
    parser.add_argument("--preset", default="cpu-real")
    parser.add_argument("--out", required=True, help="datasets, runs, cells.json and matrix.md go here")
    parser.add_argument("--vlr", nargs="+", default=["16x16", "32x32"])
    parser.add_argument("--unlabelled", nargs="+", default=["yes", "no"], choices=["yes", "no"])
    parser.add_argument("--distractors", nargs="+", type=int, default=[1000, 0])
    parser.add_argument("--weights", nargs="+", default=["xs", "xxs"], choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--design", choices=["one-at-a-time", "full"], default="one-at-a-time")
    parser.add_argument("--weights-dir", default="../shared/weights",
                        help="holds edgeface_xs_q.pt and edgeface_xxs_q.pt (the authors' checkpoints)")
    parser.add_argument("--split", default="80/10/10", help="prepare's --split")
    parser.add_argument("--threads", type=int, default=0, help="runtime.num_threads of every run (0: the preset's)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="the evaluations' bootstrap resamples")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a preset change for every cell (TOML value), e.g. --set dsr.epochs=1")
    parser.add_argument("--only", nargs="+", metavar="CELL", help="measure only these cells (names as printed)")
    return parser.parse_args(argv)


def design(args: argparse.Namespace) -> tuple[list[Cell], dict[str, Cell]]:
    """The cells to measure and, per VLR size, the reference cell (each factor's first value)."""
    factors = {"distractors": args.distractors, "unlabelled": [v == "yes" for v in args.unlabelled],   # cheapest
               "weights": args.weights, "seed": args.seeds}                                      # first
    cells: list[Cell] = []
    references = {}
    for vlr in args.vlr:
        reference = Cell(vlr, **{key: values[0] for key, values in factors.items()})
        references[vlr] = reference
        if args.design == "full":
            cells += [Cell(vlr, **dict(zip(factors, combo))) for combo in itertools.product(*factors.values())]
        else:
            cells.append(reference)
            cells += [replace(reference, **{key: value}) for key, values in factors.items() for value in values[1:]]
    unique = list(dict.fromkeys(cells))
    return [c for c in unique if not args.only or c.name in args.only], references   # one-at-a-time: cheapest first


def dataset(args: argparse.Namespace, cell: Cell) -> Path:
    """The cell's prepared dataset (made on first use): every cell of a VLR size and split seed shares it."""
    root = Path(args.out) / "data" / f"{cell.vlr}-seed{cell.seed}"
    if (root / "manifest.json").is_file():
        held_out = json.loads((root / "manifest.json").read_text()).get("distractors", {}).get("images", 0)
        if held_out < max(args.distractors):
            raise SystemExit(f"{root} holds {held_out} distractors, fewer than --distractors {max(args.distractors)}: "
                             "give another --out (or remove that dataset to prepare it again)")
        return root
    faces = Path(args.faces)
    command = ["prepare", str(faces / "labelled"), str(root), "--vlr", cell.vlr, "--split", args.split,
               "--seed", str(cell.seed), "--unlabelled", str(faces / "singles")]
    if max(args.distractors) > 0:
        command += ["--distractors", str(max(args.distractors))]
    _run(command)
    return root


def cell_preset(args: argparse.Namespace, cell: Cell) -> Path:
    width, height = (int(side) for side in cell.vlr.split("x"))
    weights = Path(args.weights_dir).resolve() / f"{VARIANTS[cell.weights]}_q.pt"
    changes = {"data.vlr_width": width, "data.vlr_height": height, "dsr.unlabelled": cell.unlabelled,
               "runtime.edgeface_variant": VARIANTS[cell.weights], "runtime.edgeface_weights": str(weights),
               "runtime.runs_dir": str((Path(args.out) / "runs").resolve())}
    if args.threads:
        changes["runtime.num_threads"] = args.threads
    changes.update(dict(parse_assignment(item) for item in args.set))
    base = P.load(args.preset)
    path = Path(args.out) / "presets" / f"{cell.training}.toml"
    return P.save(P.derive(base.with_changes(changes), f"{base.name}-{cell.training}"), path, overwrite=True)


def measure(args: argparse.Namespace, cell: Cell, done: dict[str, dict]) -> dict:
    """Run the cell (a pipeline, or an evaluate of its models' twin) and return its record."""
    data, preset = dataset(args, cell), cell_preset(args, cell)
    twin = next((r for r in done.values() if r["training"] == cell.training and r.get("pipeline")), None)
    started = time.perf_counter()
    common = ["--preset", str(preset), "--data", str(data), "--distractors", str(cell.distractors),
              "--bootstrap", str(args.bootstrap)]
    if twin is None:
        run_dir = Path(args.out) / "cells" / cell.name
        where = ["--resume", str(run_dir)] if (run_dir / "summary.json").is_file() else ["--run-dir", str(run_dir)]
        command = ["pipeline", *common, "--baselines", *where]      # an interrupted cell's pipeline resumes
        _run(command)
        record = {"pipeline": str(run_dir)}
    else:
        models = _models(Path(twin["pipeline"]))
        command = ["evaluate", *common, *models]
        before = set(_evaluate_runs(args))
        _run(command)
        run_dir = next(iter(set(_evaluate_runs(args)) - before))
        record = {"pipeline": None, "models_of": twin["training"]}
    return {**record, "cell": asdict(cell), "training": cell.training, "evaluation": str(run_dir),
            "command": "vlr-workbench " + " ".join(command), "seconds": round(time.perf_counter() - started, 1)}


def _models(pipeline: Path) -> list[str]:
    """evaluate's flags for the models a pipeline's evaluation scored (its eval.json's protocol)."""
    doc, _folds = run_evaluation(pipeline)
    protocol = doc["protocol"]
    rows = protocol["rows"]
    return ["--dsr", protocol["dsr"], "--edgeface", rows["dsr"]["recogniser_file"],
            "--edgeface-bicubic", rows["bicubic"]["recogniser_file"],
            "--edgeface-base", rows["bicubic_base"]["recogniser_file"]]


def _evaluate_runs(args: argparse.Namespace) -> list[Path]:
    return sorted((Path(args.out) / "runs").glob("*-evaluate*"))


def _run(command: list[str]) -> None:
    print("$ vlr-workbench " + " ".join(command), flush=True)
    code = cli(command)
    if code:
        raise SystemExit(f"`vlr-workbench {' '.join(command)}` exited with {code}: the matrix stops here (the cells "
                         "measured so far are kept; run this command again to go on)")


def table(cells: list[Cell], done: dict[str, dict], references: dict[str, Cell]) -> list[list[str]]:
    rows = []
    for cell in cells:
        record = done.get(cell.name)
        margin = paired_margin(run_evaluation(Path(record["evaluation"]))[0]) if record else None
        differs = _differs(cell, references[cell.vlr]) or "(reference)"
        if margin is None:
            rows.append([cell.name, cell.vlr, differs, "-", "-", "not measured" if not record else "-", "-", "-"])
            continue
        difference, interval = margin["difference"], margin["interval"]
        beyond = margin["significant"] and finite(difference) and difference > 0
        rows.append([cell.name, cell.vlr, differs, f"{margin['dsr'] * 100:.1f}",
                     f"{margin['bicubic'] * 100:.1f} ({margin['best']})", points_text(difference, interval),
                     p_text(margin["p"]) if finite(margin["p"]) else "-", "yes" if beyond else "no"])
    return rows


def _differs(cell: Cell, reference: Cell) -> str:
    shown = {"distractors": lambda v: f"{v} distractors",
             "unlabelled": lambda v: "with unlabelled faces" if v else "no unlabelled faces",
             "weights": lambda v: f"EdgeFace {v.upper()}", "seed": lambda v: f"split seed {v}"}
    return ", ".join(shown[key](getattr(cell, key)) for key in shown if getattr(cell, key) != getattr(reference, key))


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    cells, references = design(args)
    record_file = out / "cells.json"
    settings = {key: getattr(args, key) for key in ("faces", "preset", "split", "bootstrap", "set", "weights_dir")}
    recorded = json.loads(record_file.read_text()) if record_file.is_file() else {"settings": settings, "cells": {}}
    if recorded["settings"] != settings:
        changed = ", ".join(f"--{key.replace('_', '-')} {recorded['settings'].get(key)!r} -> {value!r}"
                            for key, value in settings.items() if recorded["settings"].get(key) != value)
        raise SystemExit(f"{record_file} was measured with other settings ({changed}): its cells would not compare; "
                         "give another --out, or the same settings to go on")
    done: dict[str, dict] = recorded["cells"]
    for number, cell in enumerate(cells, 1):
        if cell.name in done:
            print(f"[{number}/{len(cells)}] {cell.name}: measured before ({done[cell.name]['evaluation']})")
            continue
        print(f"[{number}/{len(cells)}] {cell.name}", flush=True)
        done[cell.name] = measure(args, cell, done)
        atomic.write_json(record_file, {"settings": settings, "cells": done})
    text = markdown(table(cells, done, references))
    atomic.write_text(out / "matrix.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
