"""`peerwatch audit show` and `peerwatch audit verify`, including a tampered log (SQLite)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.settings import Settings


def test_audit_show_and_verify_then_tamper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    app = App(Settings.resolve(home=home, environ={}))
    for i in range(1, 6):
        app.audit.append(
            actor="inv75",
            role="investigator",
            unit="U75",
            address="127.0.0.1",
            action="target.view",
            obj=f"target:{i}",
        )
    app.close()
    assert run(["--home", str(home), "audit", "show", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "target:5" in out and "target:4" in out and "target:3" not in out
    head = re.search(r"head: (5:[0-9a-f]{64})", out)
    assert head is not None
    assert run(["--home", str(home), "audit", "verify", "--anchor", head.group(1)]) == 0
    assert "OK: 5 audit entries verify" in capsys.readouterr().out

    db = sqlite3.connect(home / "peerwatch.db")
    db.execute("DROP TRIGGER audit_log_no_update")
    db.execute("UPDATE audit_log SET object = 'target:99' WHERE seq = 3")
    db.commit()
    db.close()
    assert run(["--home", str(home), "audit", "verify"]) == 7
    err = capsys.readouterr().err
    assert "first bad entry: audit entry 3:" in err

    assert run(["--home", str(home), "audit", "verify", "--anchor", "5:zz"]) == 2
    assert "SEQ:LINK" in capsys.readouterr().err
