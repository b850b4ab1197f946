"""`peerwatch user ...`, `peerwatch token ...` and `peerwatch serve`'s refusals, in-process."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.settings import Settings

PASSWORD = "correct horse battery staple"  # noqa: S105  # the test accounts' password


def pw(home: Path, *args: str, stdin: str | None = None, mp: pytest.MonkeyPatch) -> int:
    if stdin is not None:
        mp.setattr("sys.stdin", io.StringIO(stdin))
    return run(["--home", str(home), *args])


def test_user_add_list_and_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    args = ("user", "add", "alice", "--role", "investigator", "--unit", "U75", "--totp")
    assert pw(home, *args, "--password-stdin", stdin=PASSWORD + "\n", mp=monkeypatch) == 0
    out = capsys.readouterr().out
    assert "added user alice (investigator, unit U75)" in out
    assert "otpauth://totp/peerwatch:alice?secret=" in out
    assert (
        pw(
            home,
            "user",
            "add",
            "bob",
            "--role",
            "auditor",
            "--password-stdin",
            stdin="short\n",
            mp=monkeypatch,
        )
        == 2
    )
    assert "at least 12 characters" in capsys.readouterr().err
    assert (
        pw(
            home,
            "user",
            "add",
            "carl",
            "--role",
            "admin",
            "--unit",
            "U1",
            "--password-stdin",
            stdin=PASSWORD + "\n",
            mp=monkeypatch,
        )
        == 2
    )
    assert "only investigators have a unit" in capsys.readouterr().err
    assert pw(home, "user", "list", "--json", mp=monkeypatch) == 0
    (alice,) = json.loads(capsys.readouterr().out)
    assert (alice["name"], alice["role"], alice["unit"], alice["totp"]) == (
        "alice",
        "investigator",
        "U75",
        True,
    )
    assert pw(home, "token", "add", "sensor-a", "--role", "coordinator", mp=monkeypatch) == 0
    captured = capsys.readouterr()
    value = captured.out.strip()
    assert value.startswith("pwt_") and "not shown again" in captured.err
    assert pw(home, "audit", "show", "--json", mp=monkeypatch) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["action"], e["object"], e["address"]) for e in entries] == [
        ("user.add", "user:alice", "local"),
        ("token.add", "token:sensor-a", "local"),
    ]
    assert value not in json.dumps(entries)

    assert pw(home, "token", "list", "--json", mp=monkeypatch) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["revoked_ms"]) == ("sensor-a", None)
    assert value not in json.dumps(listed)
    assert pw(home, "token", "revoke", "sensor-a", mp=monkeypatch) == 0
    assert pw(home, "token", "revoke", "sensor-a", mp=monkeypatch) == 2
    assert pw(home, "user", "disable", "alice", mp=monkeypatch) == 0
    assert pw(home, "user", "disable", "nobody", mp=monkeypatch) == 2
    capsys.readouterr()
    assert pw(home, "user", "list", "--json", mp=monkeypatch) == 0
    assert json.loads(capsys.readouterr().out)[0]["disabled"] is True
    assert pw(home, "user", "enable", "alice", mp=monkeypatch) == 0
    app = App(Settings.resolve(home=home, environ={}))
    assert app.accounts.token_principal(value) is None
    assert [e.action for e in app.audit.latest(3)] == [
        "user.enable",
        "user.disable",
        "token.revoke",
    ]
    assert app.audit.verify().ok
    app.close()


def test_serve_refuses_a_non_loopback_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[str, int]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, host, port, **kw: started.append((host, port)))
    home = tmp_path / "home"
    assert pw(home, "serve", "--host", "0.0.0.0", mp=monkeypatch) == 2  # noqa: S104  # refused
    assert "--allow-remote" in capsys.readouterr().err
    assert pw(home, "serve", "--host", "192.0.2.1", mp=monkeypatch) == 2
    assert started == []
    assert pw(home, "serve", "--port", "8471", mp=monkeypatch) == 0
    assert pw(home, "serve", "--host", "::1", mp=monkeypatch) == 0
    assert pw(home, "serve", "--host", "192.0.2.1", "--allow-remote", mp=monkeypatch) == 0
    assert started == [("127.0.0.1", 8471), ("::1", 8470), ("192.0.2.1", 8470)]


def test_user_reset_totp_prints_a_new_uri_once_and_the_secret_is_sealed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    args = ("user", "add", "erin", "--role", "coordinator", "--totp", "--password-stdin")
    assert pw(home, *args, stdin=PASSWORD + "\n", mp=monkeypatch) == 0
    first = re.search(r"secret=([A-Z2-7]+)", capsys.readouterr().out)
    assert pw(home, "user", "reset-totp", "erin", mp=monkeypatch) == 0
    out = capsys.readouterr().out
    second = re.search(r"secret=([A-Z2-7]+)", out)
    assert first and second and first.group(1) != second.group(1)
    assert "its sessions are closed" in out
    assert pw(home, "user", "reset-totp", "nobody", mp=monkeypatch) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    # The key lives in HOME/keys, the database holds only the sealed form.
    app = App(Settings.resolve(home=home))
    assert (app.settings.keys_dir / "accounts-secret.key").exists()
    db = sqlite3.connect(home / "peerwatch.db")
    (stored,) = db.execute("SELECT totp_secret FROM users WHERE name = 'erin'").fetchone()
    db.close()
    assert stored.startswith("aesgcm1:") and second.group(1) not in stored
    entries = [e.action for e in app.audit.latest(10)]
    assert "user.reset-totp" in entries
