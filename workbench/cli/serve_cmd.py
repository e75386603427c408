"""``vlr-workbench serve``: the workbench in a browser (textual-serve; one app process per tab)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import socket
import sys

from engine.errors import WorkbenchError
from workbench.cli.run_flags import check_data_option

TUNNEL = "ssh -L {port}:localhost:{port} HOST"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the workbench app to a browser",
                       description="Serve the workbench to a browser with textual-serve. Every browser tab runs its "
                                   "own app process. Closing the tab leaves a job started in its own process (the "
                                   "default) running: a new tab attaches to it from the Runs tab (a), and "
                                   "`vlr-workbench stop RUN_DIR` stops it; a job inside the app (B) gets its stop "
                                   "flag and stops cleanly with a resumable last.pt. Either way its run directory "
                                   "stays on disk and the Runs tab opens it again. Anyone who "
                                   "reaches the port controls the app (no login): it listens on localhost only, "
                                   "and from another computer you forward the port over SSH: "
                                   "ssh -L 8000:localhost:8000 HOST. Another --host needs --public.")
    p.add_argument("--host", default="localhost", help="address to listen on (default: localhost; any address other "
                                                       "than a loopback one needs --public)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--public", action="store_true",
                   help="allow a --host that other machines reach (0.0.0.0, a LAN address): anyone who reaches the "
                        "port can then run jobs and read and write files as you")
    p.add_argument("--preset", dest="serve_preset", help="preset the app opens on")
    p.add_argument("--data", dest="serve_data", help="dataset root the app opens on")
    p.add_argument("--storage", dest="serve_storage", metavar="URL", help="a sweep database the app's Sweeps tab lists")
    p.set_defaults(func=cmd_serve)


def app_command(preset: str | None, data: str | None) -> str:
    """The shell command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-m", "workbench.cli.main"]
    if preset:
        argv += ["--preset", preset]
    if data:
        argv += ["--data", data]
    return shlex.join(argv)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches only this machine: 127.0.0.0/8, ::1, localhost."""
    name = host.strip().strip("[]")
    if name.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return False  # cannot tell: treat it as reachable from elsewhere
    return bool(found) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in found)


def check_host(host: str, port: int, public: bool) -> None:
    """Refuse a non-loopback --host unless --public says the user means it."""
    if public or is_loopback(host):
        return
    raise WorkbenchError(
        f"--host {host} is not a loopback address: the app would be open to anyone who can reach port {port} of "
        "this machine, with no login, and could start jobs and read and write your files. To use the app from "
        f"another computer, keep the default --host localhost and forward the port over SSH "
        f"({TUNNEL.format(port=port)}, then open http://localhost:{port}); to serve on {host} anyway, add --public.")


def public_warning(host: str, port: int) -> str:
    return (f"warning: serving on {host}:{port} with --public: anyone who can reach this port can use the app "
            "without a login (start and stop jobs, read and write files as you). Stop it with Ctrl-C; an SSH "
            f"tunnel ({TUNNEL.format(port=port)}) with --host localhost is the safe way.")


def cmd_serve(args) -> int:
    check_host(args.host, args.port, args.public)
    check_data_option(args.serve_data)
    from engine.sweep.storage import check_storage_url
    from textual_serve.server import Server

    check_storage_url(args.serve_storage)
    if args.serve_storage:               # to every tab's app through its environment: textual-serve prints commands
        from workbench.app.launch import STORAGE_ENV

        os.environ[STORAGE_ENV] = args.serve_storage

    if not is_loopback(args.host):
        print(public_warning(args.host, args.port), file=sys.stderr, flush=True)
    Server(app_command(args.serve_preset, args.serve_data), host=args.host, port=args.port,
           title="vlr-workbench").serve()
    return 0
