"""Entry point of ``vlr-workbench``: no arguments opens the app, subcommands run headless."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rich.console import Console
from rich.markup import escape

from engine.io.atomic import storage_error
from engine.errors import WorkbenchError

# Each module defines ``register(subparsers)`` adding its commands with ``set_defaults(func=...)``;
# a command function takes the parsed args and returns an exit code.
COMMAND_MODULES = [
    "workbench.cli.presets_cmd",
    "workbench.cli.data_cmd",
    "workbench.cli.train_cmd",
    "workbench.cli.finetune_cmd",
    "workbench.cli.evaluate_cmd",
    "workbench.cli.tips_cmd",
    "workbench.cli.report_cmd",
    "workbench.cli.runs_cmd",
    "workbench.cli.serve_cmd",
    "workbench.cli.attach_cmd",
    "workbench.cli.batch_cmd",
    "workbench.cli.sweep_cmd",
    "workbench.cli.deploy_cmd",
]

err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # paths in errors stay unbroken
BROKEN_PIPE_EXIT = 1  # stdout closed by its reader: the Python docs' recipe, and what rich's console exits with


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlr-workbench",
        description="Train and evaluate very-low-resolution face recognition: DSR super-resolution, "
                    "EdgeFace fine-tuning and rank-1 evaluation. With no command, opens the workbench app.")
    parser.add_argument("--preset", help="preset name or path to open the app on (default: last used, else cpu-demo)")
    parser.add_argument("--data", help="dataset root to open the app on (default: the preset's, else demo faces)")
    parser.add_argument("--storage", dest="app_storage", metavar="URL",
                        help="a sweep database (postgresql://USER@HOST:PORT/DB): the app's Sweeps tab lists its studies "
                             "beside the runs directory's, and new sweeps default to it")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Turn off argparse's prefix matching in every (sub)command: ``--epoch 2`` is an error naming the flag,
    not a silent ``--epochs 2`` (issue 37)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports torch: Ctrl-C here is common and must not print a traceback
        args = parser.parse_args(argv)
        if args.command is not None and args.app_storage:
            raise WorkbenchError(f"--storage before the command {args.command} is the app's (its Sweeps tab): give it "
                                 f"after the command instead (`vlr-workbench {args.command} ... --storage URL`).")
        if args.command is None:
            from workbench.cli.run_flags import check_data_option

            check_data_option(args.data)  # before the app opens (and before Textual is imported)
            from engine.sweep.storage import check_storage_url
            from workbench.app.launch import STORAGE_ENV, launch_app

            storage = args.app_storage or os.environ.get(STORAGE_ENV) or None
            check_storage_url(storage)
            return launch_app(preset=args.preset, data=args.data, storage=storage)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # stdout closed by the reader (`| head`): not a disk fault; run() ends quietly
        raise
    except WorkbenchError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except OSError as exc:  # a full or read-only disk outside engine.io.atomic (the last line of defence)
        user_error = storage_error(exc, exc.filename or "a file")
        if user_error is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(user_error))}")
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


def run() -> None:
    try:
        code = main()
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
    except KeyboardInterrupt:  # a second Ctrl-C while the first is being handled
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `vlr-workbench runs --json | head -1`: the reader closed stdout
        _silence_stdout()
        code = BROKEN_PIPE_EXIT
    sys.exit(code)


def _silence_stdout() -> None:
    """Point stdout at devnull, so that the interpreter's last flush of what is left cannot fail again
    (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (already closed, or replaced): nothing left to flush
        pass


if __name__ == "__main__":
    run()
