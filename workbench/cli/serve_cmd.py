"""``vlr-workbench serve``: the workbench in a browser (textual-serve; one app process per tab)."""

from __future__ import annotations

import argparse
import shlex
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the workbench app to a browser",
                       description="Serve the workbench to a browser with textual-serve. Every browser tab runs its "
                                   "own app process, and closing the tab stops that app's job cleanly (its run "
                                   "directory and last.pt stay on disk; the Runs tab opens it again). Over SSH, "
                                   "forward the port: ssh -L 8000:localhost:8000 HOST.")
    p.add_argument("--host", default="localhost", help="address to listen on (default: localhost)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--preset", dest="serve_preset", help="preset the app opens on")
    p.add_argument("--data", dest="serve_data", help="dataset root the app opens on")
    p.set_defaults(func=cmd_serve)


def app_command(preset: str | None, data: str | None) -> str:
    """The shell command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-m", "workbench.cli.main"]
    if preset:
        argv += ["--preset", preset]
    if data:
        argv += ["--data", data]
    return shlex.join(argv)


def cmd_serve(args) -> int:
    from textual_serve.server import Server

    Server(app_command(args.serve_preset, args.serve_data), host=args.host, port=args.port,
           title="vlr-workbench").serve()
    return 0
