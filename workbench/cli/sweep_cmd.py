"""``vlr-workbench sweep``: an Optuna study over preset keys, each trial an ordinary run; ``sweep show``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import presets
from engine.jobs.options import SweepOptions
from engine.jobs.registry import JobRequest, sweep_trial_jobs
from workbench.cli.job_runner import run_in_foreground

EXAMPLE = """example (space.toml):

  [params]
  "dsr.learning_rate" = { low = 1e-4, high = 1e-3, log = true }
  "dsr.lambda_identity" = { low = 0.0, high = 0.4, step = 0.1 }
  "dsr.base_channels" = { choices = [16, 32] }

  vlr-workbench sweep --preset cpu-demo --space space.toml --trials 8 --objective val.psnr
  vlr-workbench sweep show cpu-demo-sweep
  vlr-workbench sweep --preset cpu-demo --space space.toml --job pipeline --baselines --folds 3 \
      --objective "eval.dsr.rank1 - eval.bicubic_best.rank1" --study margin

Running the same command again resumes the study (finished trials are kept; a trial whose process died
runs again). Each trial is a run in runtime.runs_dir with the trial's preset: the runs table, attach,
stop, tips and report work on it; its sweep.json names the study and trial. The best trial's preset
is saved as PRESET-best-STUDY. The study is an Optuna journal under runs_dir/sweeps (many processes on
one host; optuna-dashboard reads it); --storage postgresql://... shares it between machines (SQLite
is not safe for parallel writers)."""


FIND_HELP = ("the preset whose runs_dir holds the study (default: looked for in the runs_dir recorded when it "
             "started, then in every known preset's)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="tune preset keys with an Optuna study (each trial a run)",
                                   description="Search preset keys for the best value of a recorded metric.",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="the base preset (default cpu-demo, or RUN_DIR's with --from-run)")
    parser.add_argument("--data", help="dataset root (default: the preset's data.root)")
    parser.add_argument("--space", metavar="FILE", help="search space TOML: a [params] table (see the example)")
    parser.add_argument("--job", default="train-dsr", choices=sweep_trial_jobs(),
                        help="what a trial runs (default train-dsr)")
    parser.add_argument("--trials", type=int, default=10, help="finished trials the study should hold (default 10)")
    parser.add_argument("--objective", default="val.psnr",
                        help="val.METRIC (best epoch), eval.ROW.METRIC or summary.KEY (default val.psnr)")
    parser.add_argument("--direction", default="maximize", choices=("maximize", "minimize"))
    parser.add_argument("--objective2", help="a second objective, e.g. summary.parameters or summary.images_per_second:"
                                             " the study keeps the Pareto front of the two (no pruning)")
    parser.add_argument("--direction2", default="minimize", choices=("maximize", "minimize"))
    parser.add_argument("--study", help="study name (default PRESET-sweep): the same name resumes or joins it")
    parser.add_argument("--storage", help="an RDB URL shared by several machines (default: a journal file)")
    parser.add_argument("--storage-wait", type=float, metavar="SECONDS",
                        help="with --storage: how long the controller retries a server that does not answer (a "
                             "restart, a network drop) before it stops its trial with a checkpoint (default 120)")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random", "grid"))
    parser.add_argument("--seed", type=int, help="the sampler's seed (default runtime.seed)")
    parser.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="wall-time budget: no trial starts after it (the running ones finish)")
    parser.add_argument("--parallel", type=int, default=1, metavar="K",
                        help="trials at once, each a CLI process (CPU: the cores divided; CUDA: its own GPUs)")
    parser.add_argument("--gpus-per-trial", type=int, default=1, metavar="G",
                        help="CUDA devices of each parallel trial (more than one: the trial runs under torchrun)")
    parser.add_argument("--baselines", action="store_true",
                        help="pipeline trials: also fine-tune a recogniser on bicubic images (the fair "
                             "eval.bicubic_best row)")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="pipeline trials: K subject folds; eval.ROW.METRIC is then the mean over the folds")
    parser.add_argument("--from-run", metavar="RUN_DIR",
                        help="first try RUN_DIR's preset and each of its tips (labelled), then the best trial's "
                             "tips every few trials; the base preset is RUN_DIR's unless --preset is given")
    parser.set_defaults(func=sweep)
    actions = parser.add_subparsers(dest="sweep_action", metavar="{show,stop,save-best}")
    show = actions.add_parser("show", help="the trials of a study (--json: one object)")
    show.add_argument("study_name", metavar="STUDY")
    show.add_argument("--preset", default=argparse.SUPPRESS, help=FIND_HELP)
    show.add_argument("--storage", default=argparse.SUPPRESS, help="the study's RDB URL, when it has one")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=sweep_show)
    halt = actions.add_parser("stop", help="ask this host's controller of STUDY to stop (trials keep checkpoints)")
    halt.add_argument("study_name", metavar="STUDY")
    halt.add_argument("--preset", default=argparse.SUPPRESS, help=FIND_HELP)
    halt.set_defaults(func=sweep_stop)
    best = actions.add_parser("save-best", help="save the best trial's preset (or --trial N's) as a user preset")
    best.add_argument("study_name", metavar="STUDY")
    best.add_argument("name", metavar="NAME", help="the new preset's name")
    best.add_argument("--trial", type=int, help="this trial instead of the best")
    best.add_argument("--force", action="store_true", help="replace NAME if it exists (never a built-in)")
    best.add_argument("--preset", default=argparse.SUPPRESS,
                      help="the base preset the diff is shown from, whose runs_dir holds the study (default: the "
                           "preset the study was started from, found as for `sweep show`)")
    best.add_argument("--storage", default=argparse.SUPPRESS, help="the study's RDB URL, when it has one")
    best.set_defaults(func=sweep_save_best)


def _options(args, study: str | None) -> SweepOptions:
    return SweepOptions(space=args.space, job=args.job, trials=args.trials, objective=args.objective,
                        objective2=getattr(args, "objective2", None),
                        direction2=getattr(args, "direction2", "minimize"),
                        direction=args.direction, study=study, storage=args.storage,
                        storage_wait=getattr(args, "storage_wait", None), sampler=args.sampler,
                        seed=args.seed, prune=not args.no_prune, from_run=getattr(args, "from_run", None),
                        timeout=getattr(args, "timeout", None), parallel=getattr(args, "parallel", 1),
                        gpus_per_trial=getattr(args, "gpus_per_trial", 1),
                        baselines=getattr(args, "baselines", False), folds=getattr(args, "folds", None))


def _base_preset(args):
    if args.preset:
        return presets.load(args.preset)
    if getattr(args, "from_run", None):
        return presets.load(Path(args.from_run) / "preset.toml")
    return presets.load("cpu-demo")


def sweep(args) -> int:
    preset = _base_preset(args)
    return run_in_foreground(JobRequest("sweep", preset, data=args.data, options=_options(args, args.study)))


def _named_preset(args) -> str | None:
    """The preset a `sweep show/stop/save-best` was told holds the study (None: find it)."""
    if getattr(args, "preset", None):
        return args.preset
    if getattr(args, "from_run", None):
        return str(Path(args.from_run) / "preset.toml")
    return None


def sweep_show(args) -> int:
    from engine.sweep.finding import find_study
    from engine.sweep.study import importances, trial_rows

    study = find_study(args.study_name, _named_preset(args), getattr(args, "storage", None)).study
    rows = trial_rows(study)
    if args.json:
        directions = [d.name.lower() for d in study.directions]
        print(json.dumps({"study": study.study_name, "directions": directions, "trials": rows,
                          "importances": importances(study)}))
        return 0
    table, legend, lines = _trials_table(study, rows)
    console = Console(highlight=False)
    if console.measure(table, options=console.options.update_width(10_000)).maximum <= console.width:
        console.print(table)
    else:                                   # too narrow for one column per parameter: one block per trial
        console.print(table.title)
        for line in lines:
            console.print(line)
    if legend:
        console.print(legend)
    weights = importances(study)
    if weights:
        console.print("importances: " + ", ".join(f"{escape(k)} {v:.2f}" for k, v in weights.items()))
    pruning = (study.user_attrs.get("setup") or {}).get("pruning")
    if pruning:
        console.print(f"pruning: {escape(pruning)}")
    return 0


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each parameter's column header: its last part (``learning_rate``), the whole key where two share one."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key for key, short in zip(keys, last)}


def _trials_table(study, rows: list[dict]) -> tuple[Table, str, list[str]]:
    """The trials as a table (one column per parameter under its short name, the legend naming the keys; the
    run directory by its name, the folder holding them in the legend), and the same as one block of lines per
    trial for a terminal too narrow for the table (80 columns cut the parameters to `dsr.learning_ra...`)."""
    keys = sorted({key for row in rows for key in row["params"]})
    short = _short_names(keys)
    table = Table(title=f"study {study.study_name} ({', '.join(d.name.lower() for d in study.directions)}; "
                        "* = best, or on the Pareto front)")
    for column in ("#", "state", "value", *short.values(), "tried", "run"):
        table.add_column(escape(column), overflow="fold")
    folders = {str(Path(row["run_dir"]).parent) for row in rows if row["run_dir"]}
    lines = []
    for row in rows:
        state = row["state"] + (f" @ epoch {row['pruned_at_epoch']}" if row["pruned_at_epoch"] else "")
        values = row["value"] if isinstance(row["value"], list) else [row["value"]]
        value = " / ".join(f"{v:.4g}" for v in values if v is not None) + (" *" if row["best"] else "")
        params = [row["params"].get(key) for key in keys]
        shown = ["" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in params]
        run = row["run_dir"] or ""
        run = Path(run).name if len(folders) == 1 else run
        table.add_row(str(row["number"]), state, value, *map(escape, shown), escape(row["label"] or "sampler"),
                      escape(run))
        lines.append(escape(f"#{row['number']} {state}  value {value or '-'}  {row['label'] or 'sampler'}  "
                            f"run {run or '-'}"))
        lines.append(escape("    " + "  ".join(f"{short[key]}={text}" for key, text in zip(keys, shown) if text)))
    named = [f"{name} = {key}" for key, name in short.items() if name != key]
    legend = "; ".join(named + ([f"runs in {next(iter(folders))}"] if len(folders) == 1 else []))
    return table, escape(legend), lines


def sweep_save_best(args) -> int:
    from engine.errors import WorkbenchError
    from engine.sweep.finding import find_study
    from engine.sweep.study import trial_preset_as

    presets.check_save_target(args.name)              # before the study is read: nothing written elsewhere
    found = find_study(args.study_name, _named_preset(args), getattr(args, "storage", None))
    study, base = found.study, found.base
    if args.trial is not None:
        chosen = next((t for t in study.get_trials(deepcopy=False) if t.number == args.trial), None)
        if chosen is None or chosen.state.name != "COMPLETE":
            raise WorkbenchError(f"study {study.study_name} has no complete trial {args.trial}: `vlr-workbench sweep "
                                 f"show {study.study_name}` lists them.")
    elif len(study.directions) > 1:
        raise WorkbenchError(f"study {study.study_name} has two objectives: pick a trial of its Pareto front with "
                             "--trial N (`sweep show` marks them with *).")
    else:
        try:
            chosen = study.best_trial
        except ValueError:
            raise WorkbenchError(f"study {study.study_name} has no complete trial yet.") from None
    saved = trial_preset_as(chosen, base, args.name)
    path = presets.save(saved, args.name, overwrite=args.force)
    console = Console(highlight=False)
    console.print(f"saved trial {chosen.number} as {escape(args.name)} ({escape(str(path))}); it differs from "
                  f"{escape(base.name)} in:")
    for key, old, new in presets.diff(base, saved):
        console.print(f"  {escape(key)}: {escape(presets.show_value(old))} -> {escape(presets.show_value(new))}")
    return 0


def sweep_stop(args) -> int:
    from engine.errors import WorkbenchError
    from engine.sweep.finding import locate_study
    from engine.sweep.listing import controller_state, stop_sweep
    from engine.sweep.places import sweeps_dir

    named = _named_preset(args)
    preset = (presets.load(named) if named else
              locate_study(args.study_name, lambda runs_dir: (sweeps_dir(runs_dir) / args.study_name).is_dir()))
    control = sweeps_dir(preset.runtime.runs_dir) / args.study_name
    state = controller_state(control)
    if state != "running":
        raise WorkbenchError(f"study {args.study_name} has no running controller on this host ({control}: "
                             f"{'never run here' if state == '-' else state}); nothing to stop.")
    stop_sweep(preset.runtime.runs_dir, args.study_name)
    Console(highlight=False).print(f"asked {escape(args.study_name)} to stop: its running trials save their "
                                   "checkpoints; the same `sweep` command resumes them.")
    return 0
