"""`vlr-workbench serve` answers a browser on loopback with the textual-serve page."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from workbench.cli.serve_cmd import app_command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_app_command_runs_this_python_with_the_chosen_preset():
    command = app_command("cpu-demo", "/data/x y")
    assert command.startswith(sys.executable) and "-m workbench.cli.main" in command
    assert "--preset cpu-demo" in command and "'/data/x y'" in command


def test_serve_help_says_a_job_in_its_own_process_outlives_the_tab(capsys):
    """serve's help said closing the tab stops the job; an own-process job (the default) keeps running."""
    from workbench.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "closing the tab stops" not in text.lower()
    assert "Closing the tab leaves a job started in its own process (the default) running" in text
    assert "a job inside the app (B) gets its stop flag and stops cleanly with a resumable last.pt" in text


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


class _FakeServer:
    """Stands in for textual_serve's Server: records what would have been served."""
    started: list[dict] = []

    def __init__(self, command, host, port, title):
        self.kwargs = {"command": command, "host": host, "port": port}

    def serve(self):
        _FakeServer.started.append(self.kwargs)


@pytest.fixture
def fake_server(monkeypatch):
    import textual_serve.server

    _FakeServer.started = []
    monkeypatch.setattr(textual_serve.server, "Server", _FakeServer)
    return _FakeServer.started


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_a_public_host_without_public_is_refused_and_nothing_starts(fake_server, capsys, host):
    from workbench.cli.main import main

    assert main(["serve", "--host", host, "--port", "8123"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"--host {host} is not a loopback address" in err and "add --public" in err
    assert "ssh -L 8123:localhost:8123 HOST" in err and "Traceback" not in err
    assert err.count("error:") == 1 and fake_server == []


def test_public_prints_the_risk_then_serves(fake_server, capsys):
    from workbench.cli.main import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "8124", "--public"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: serving on 0.0.0.0:8124 with --public" in err and "without a login" in err
    assert fake_server == [{"command": app_command(None, None), "host": "0.0.0.0", "port": 8124}]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "127.0.1.1"])
def test_loopback_hosts_serve_without_a_warning(fake_server, capsys, host):
    from workbench.cli.main import main

    assert main(["serve", "--host", host]) == 0
    assert capsys.readouterr().err == "" and [s["host"] for s in fake_server] == [host]


def test_serve_refuses_a_missing_data_folder(fake_server, capsys, tmp_path):
    from workbench.cli.main import main

    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err and fake_server == []
