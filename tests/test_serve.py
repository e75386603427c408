"""`vlr-workbench serve` answers a browser on loopback with the textual-serve page."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

from workbench.cli.serve_cmd import app_command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_app_command_runs_this_python_with_the_chosen_preset():
    command = app_command("cpu-demo", "/data/x y")
    assert command.startswith(sys.executable) and "-m workbench.cli.main" in command
    assert "--preset cpu-demo" in command and "'/data/x y'" in command


def test_serve_answers_on_loopback():
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "workbench.cli.main", "serve", "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", "replace")
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.5)
        assert "vlr-workbench" in page and "ws" in page  # the page opens a websocket to an app process
    finally:
        server.terminate()
        server.wait(timeout=10)
