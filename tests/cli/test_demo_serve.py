"""`peerwatch demo` serves the web app until Ctrl-C, then stops the server and the lab cleanly; run
again on the same home it gives the demo account a new password.

The demo runs as a subprocess (as `make demo` does) on its own loopback /24, 127.0.14.x, and a
free port; the web app is driven over HTTP with the credentials the demo prints."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.settings import Settings
from tests.demo_server import (
    PEERWATCH,
    Lines,
    credentials,
    demo_args,
    free_port,
    interrupt,
    processes_mentioning,
    sign_in,
    start,
)
from tests.interop.conftest import require_lab_tools
from tests.shared_data import require_boundaries

LAB_NET = "127.0.14."
SENSOR_IP = "127.0.14.200"
_PASSWORD_LINE = re.compile(r"^  password: (\S+)")
_TARGETS = re.compile(r"^  (\d+) targets, (\d+) routed")


def test_demo_serves_until_ctrl_c_then_stops_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_lab_tools(tracker=False)
    require_boundaries()
    home = tmp_path / "home"
    port = free_port()
    proc = start(demo_args(home, LAB_NET, SENSOR_IP, "--port", str(port)))
    lines = Lines(proc)
    try:
        lines.wait_for(_PASSWORD_LINE, 240)
        found = credentials(lines.lines)
        assert found is not None
        assert found.where == f"http://127.0.0.1:{port}/"
        assert found.user == "demo" and len(found.password) >= 12
        targets = int(lines.wait_for(_TARGETS, 1).group(1))
        assert targets > 0
        # The lab keeps running while the app is served.
        assert processes_mentioning(str(home / "lab"))

        with httpx.Client(base_url=found.where, follow_redirects=True, timeout=30) as client:
            assert client.get("/leads").url.path == "/login"  # not signed in yet
            wrong = sign_in(client, found.user, found.password + "x")
            assert wrong.url.path == "/login" and "pw_session" not in client.cookies
            page = sign_in(client, found.user, found.password)
            assert page.status_code == 200
            assert page.url.path == "/leads"
            listed = set(re.findall(r'href="/leads/(\d+)"', page.text))
            assert len(listed) == targets
            first = client.get(f"/leads/{min(listed, key=int)}")
            assert first.status_code == 200 and "Observations" in first.text
    finally:
        status = interrupt(proc) if proc.poll() is None else proc.returncode
    output = lines.drain()
    assert status == 0, "\n".join(output[-30:])
    assert "web app stopped" in output and "lab stopped" in output
    assert processes_mentioning(str(home)) == []  # no peer, tracker or server left behind
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))

    # Again on the same home: the account is kept and gets a new password, the old one is dead.
    capsys.readouterr()
    # In-process this time: the same arguments without the interpreter's `python -m ...`.
    assert run(demo_args(home, LAB_NET, SENSOR_IP, "--no-serve")[len(PEERWATCH) :]) == 0
    again = credentials(capsys.readouterr().out.splitlines())
    assert again is not None and again.user == "demo" and again.password != found.password
    assert again.where.startswith("not served (--no-serve); serve it with: ")
    assert again.where.endswith(f"--home {home} serve --port 8470")
    app = App(Settings.resolve(home=home, database_url=None, sensor_id=None))
    try:
        assert [u.name for u in app.accounts.users()] == ["demo"]
        assert app.accounts.check_password("demo", found.password) is None
        assert app.accounts.check_password("demo", again.password) is not None
        entries = app.audit.latest(100)  # newest first
        actions = [e.action for e in entries if e.object == "user:demo"]
        assert [a for a in actions if a.startswith("user.")] == ["user.password", "user.add"]
        assert "login.ok" in actions and "login.failed" in actions
    finally:
        app.close()
    assert processes_mentioning(str(home)) == []


def test_demo_says_when_its_port_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        home = tmp_path / "home"
        code = run(["--home", str(home), "demo", "--lab-net", LAB_NET, "--port", str(port)])
    assert code == 2
    message = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is taken" in message and "--port" in message
    # Said before anything started: no lab was made.
    assert not (home / "lab").exists()
