"""`peerwatch case export` and `peerwatch case verify`, in-process on SQLite."""

from __future__ import annotations

import getpass
import json

import pytest

from tests.cases.conftest import PARIS, Lab, pw


def test_export_by_label_verifies_and_is_audited(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    tid = lab.target_of(PARIS)
    label = f"T-{tid:06d}"
    out = lab.tmp / "pkg"
    assert pw(lab.home, "case", "export", label, "--out", str(out)) == 0
    said = capsys.readouterr().out
    assert f"wrote the case package of {label}" in said and "5 observations" in said
    manifest_sha = said.split("manifest.json sha256:")[1].split()[0]
    assert pw(lab.home, "evidence", "verify-bundle", str(out / "evidence")) == 0
    assert "OK" in capsys.readouterr().out
    assert pw(lab.home, "case", "verify", str(out)) == 0
    assert "OK: case package" in capsys.readouterr().out
    doc = json.loads((out / "case.json").read_text())
    actor = f"cli:{getpass.getuser()}"
    assert doc["exported_by"] == actor
    app = lab.app()
    try:
        (entry,) = [e for e in app.audit.latest() if e.action == "case.export"]
    finally:
        app.close()
    assert (entry.actor, entry.object) == (actor, f"target:{tid}")
    assert entry.detail["manifest_sha256"] == manifest_sha
    assert entry.detail["target"] == label and entry.detail["observations"] == 5


def test_export_by_numeric_id_and_errors(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    tid = lab.target_of(PARIS)
    out = lab.tmp / "pkg"
    assert pw(lab.home, "case", "export", str(tid), "--out", str(out)) == 0
    capsys.readouterr()
    # The same folder again: refused, nothing changed.
    before = sorted(p.name for p in out.iterdir())
    assert pw(lab.home, "case", "export", str(tid), "--out", str(out)) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    assert pw(lab.home, "case", "export", "T-000999", "--out", str(lab.tmp / "x")) == 2
    assert "no target T-000999" in capsys.readouterr().err
    assert not (lab.tmp / "x").exists()
    assert pw(lab.home, "case", "export", "nonsense", "--out", str(lab.tmp / "y")) == 2
    assert "not a target id" in capsys.readouterr().err
    assert pw(lab.home, "case", "verify", str(lab.tmp)) == 4
    assert "cannot read the manifest" in capsys.readouterr().err
