"""The lead workflow end to end through the CLI, on the real targets, enrichment and evidence log
(SQLite in a temporary --home; the lab data of tests/leads/test_leads_cli.py): claim, conflict,
transfer, state, history, alerts, an operation with its per-unit packages, retention."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from peerwatch.app import App
from peerwatch.leads.workflow import LeadWorkflow
from peerwatch.settings import Settings
from tests.leads.targets_support import DAY, T0, probe
from tests.leads.test_leads_cli import lab_home, pw

__all__ = ["lab_home"]  # the fixture, imported for pytest
HOUR = 3_600_000


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    doc = json.loads(capsys.readouterr().out)
    assert isinstance(doc, dict) and doc["version"] == 1
    return doc


def _leads(home: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert pw(home, "leads", "--format", "json") == 0
    leads = json.loads(capsys.readouterr().out)["leads"]
    return {
        str(x["ips"][0]) + ("" if x["ips"][0] != "127.0.7.30" else f":{i}"): x
        for i, x in enumerate(leads)
    }


def test_claim_transfer_state_history_and_alerts(
    lab_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = lab_home
    leads = _leads(home, capsys)
    gironde = leads["2001:db8:5:1::10"]
    tid = str(gironde["id"])
    assert gironde["unit"] == "SUD"

    # Alerts: every unit hears of the new leads in its jurisdictions, once.
    assert pw(home, "alerts", "--format", "json") == 0
    first = _json(capsys)
    alerts = first["alerts"]
    assert isinstance(alerts, list) and len(alerts) == 5 == len(first["new"])
    # Paris' peer moved into the 13: its lead is for SUD, like the 33 and the 69.
    assert sorted({a["unit"] for a in alerts}) == ["ANTILLES", "SUD"]
    assert {a["kind"] for a in alerts} == {"new-lead"}
    assert pw(home, "alerts", "--unit", "SUD", "--format", "json") == 0
    again = _json(capsys)
    assert again["new"] == [] and {a["unit"] for a in again["alerts"]} == {"SUD"}

    # Claim; a second unit is refused and told who holds it since when (exit 6).
    assert pw(home, "target", "claim", tid, "--unit", "SUD", "--by", "alice") == 0
    assert "held by unit SUD since" in capsys.readouterr().out
    assert pw(home, "target", "claim", tid, "--unit", "ANTILLES", "--by", "bob") == 6
    refused = capsys.readouterr().err
    assert "held by unit SUD since" in refused and "alice" in refused
    assert pw(home, "target", "claim", tid, "--unit", "NOWHERE", "--by", "bob") == 6
    assert "unknown unit 'NOWHERE'" in capsys.readouterr().err
    # Each attempt, done or refused, is in the hash-chained audit log, as from the web app.
    audit = App(Settings.resolve(home=home)).audit
    claims = [e for e in audit.iter_entries() if e.action == "target.claim"]
    assert [(e.object, e.detail["ok"], e.detail["by"]) for e in claims] == [
        (f"target:{tid}", True, "alice"),
        (f"target:{tid}", False, "bob"),
        (f"target:{tid}", False, "bob"),
    ]
    assert all(e.actor.startswith("cli:") for e in claims) and audit.verify().ok

    # Transfer, then move along the investigation; an illegal move is refused.
    assert pw(home, "target", "transfer", tid, "--to", "BRIGADE-PARIS", "--by", "alice") == 0
    capsys.readouterr()
    assert pw(home, "target", "state", tid, "closed", "--by", "carol") == 6
    assert "needs an outcome" in capsys.readouterr().err
    assert pw(home, "target", "state", tid, "requisition-sent", "--by", "carol") == 6
    assert "cannot state -> requisition-sent" in capsys.readouterr().err
    for step in ("in-investigation", "requisition-sent"):
        assert pw(home, "target", "state", tid, step, "--by", "carol") == 0
    capsys.readouterr()
    assert pw(home, "target", "history", tid, "--format", "json") == 0
    hist = _json(capsys)
    assert hist["lead"]["state"] == "requisition-sent"
    assert hist["lead"]["unit"] == "BRIGADE-PARIS"
    assert [(h["action"], h["to_state"], h["to_unit"]) for h in hist["history"]] == [
        ("claim", "claimed", "SUD"),
        ("transfer", "claimed", "BRIGADE-PARIS"),
        ("state", "in-investigation", "BRIGADE-PARIS"),
        ("state", "requisition-sent", "BRIGADE-PARIS"),
    ]
    assert pw(home, "target", "history", tid) == 0
    assert "transfer" in capsys.readouterr().out

    # A held target is seen again after the claim: its holder is alerted, once. The lab's
    # observations are from T0, so this claim is made as of T0 + DAY + 1 h (the CLI's claims
    # use the wall clock) and the new sighting comes an hour later from the same endpoint.
    mover = int(str(leads["127.0.5.10"]["id"]))
    app = App(Settings.resolve(home=home))
    try:
        LeadWorkflow(app.engine, clock_ms=lambda: T0 + DAY + HOUR).claim(
            mover, unit="BRIGADE-PARIS", actor="erin"
        )
        app.evidence.append([probe(T0 + DAY + 2 * HOUR, "127.0.6.20", 51413, "qBittorrent/4.6.0")])
    finally:
        app.close()
    assert pw(home, "alerts", "--unit", "BRIGADE-PARIS", "--format", "json") == 0
    seen = _json(capsys)
    (alert,) = [a for a in seen["alerts"] if a["kind"] == "claimed-seen-again"]
    assert alert["target_id"] == mover and alert["observations"] == 1
    assert alert["first_observed"] == "2025-11-25T18:00:00Z"
    assert seen["new"] == [alert["id"]]
    assert pw(home, "alerts", "--unit", "BRIGADE-PARIS", "--format", "json") == 0
    assert _json(capsys)["new"] == []
    assert pw(home, "alerts", "--ack", str(alert["id"]), "--by", "dave") == 0
    assert "acknowledged by dave" in capsys.readouterr().out
    assert pw(home, "alerts", "--unit", "BRIGADE-PARIS") == 0
    assert "claimed-seen-again" not in capsys.readouterr().out


def test_operation_create_show_dispatch(
    lab_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = lab_home
    leads = _leads(home, capsys)
    assert (
        pw(
            home,
            "target",
            "claim",
            str(leads["127.0.8.40"]["id"]),
            "--unit",
            "ANTILLES",
            "--by",
            "x",
        )
        == 0
    )
    capsys.readouterr()
    assert pw(home, "operation", "create", "Op Nov", "--by", "lead", "--category", "3") == 0
    out = capsys.readouterr().out
    assert "operation 1 'Op Nov' created: 2 targets in 2 départements" in out
    assert pw(home, "operation", "create", "Op Nov", "--by", "lead") == 2
    assert "already exists" in capsys.readouterr().err
    assert pw(home, "operation", "create", "all", "--by", "lead") == 0
    assert "5 targets in 4 départements" in capsys.readouterr().out
    assert pw(home, "operation", "list") == 0
    assert "Op Nov" in capsys.readouterr().out

    assert pw(home, "operation", "show", "all", "--format", "json") == 0
    shown = _json(capsys)
    assert shown["format"] == "peerwatch-operation" and shown["headline"] == (
        "5 targets in 4 départements"
    )
    units = {t["id"]: t["unit"] for t in shown["targets"]}
    # The claimed Rhône target goes to the unit holding it, not to its jurisdiction's unit.
    assert units[leads["127.0.8.40"]["id"]] == "ANTILLES"
    assert pw(home, "operation", "show", "2") == 0
    assert "5 targets in 4 départements" in capsys.readouterr().out

    dest = tmp_path / "dispatch"
    assert pw(home, "operation", "dispatch", "all", "--out", str(dest)) == 0
    assert "5 targets in 4 départements" in capsys.readouterr().out
    manifest = json.loads((dest / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == digest
    assert sorted(u["unit"] for u in manifest["units"]) == ["ANTILLES", "SUD"]
    antilles = json.loads((dest / "units/ANTILLES/targets.json").read_text())
    assert len(antilles["targets"]) == 3
    lines = list(
        csv.DictReader(io.StringIO((dest / "units/ANTILLES/requisitions.csv").read_text()))
    )
    # Guadeloupe: two peers behind one address, told apart by the source port; ASN from GeoIP.
    assert {(r["ip"], r["port"], r["asn"]) for r in lines if r["ip"] == "127.0.7.30"} == {
        ("127.0.7.30", "6881", "64501"),
        ("127.0.7.30", "6882", "64501"),
    }
    assert all(r["time_utc"].endswith("Z") and len(r["time_utc"]) == 20 for r in lines)
    summary = json.loads((dest / "national-summary.json").read_text())
    assert [(j["code"], j["targets"]) for j in summary["by_jurisdiction"]] == [
        ("13", 1),
        ("33", 1),
        ("69", 1),
        ("971", 2),
    ]
    assert pw(home, "operation", "dispatch", "all", "--out", str(dest)) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_retention_purge_dry_run_and_log(
    lab_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = lab_home
    leads = _leads(home, capsys)
    assert (
        pw(home, "target", "claim", str(leads["127.0.5.10"]["id"]), "--unit", "SUD", "--by", "a")
        == 0
    )
    capsys.readouterr()
    # The lab's observations are from T0 (2025-11-24); today is later than T0 + 180 days.
    assert pw(home, "retention", "purge", "--dry-run", "--format", "json") == 0
    dry = _json(capsys)["purge"]
    assert dry["dry_run"] is True and dry["records"] > 0
    assert pw(home, "retention", "log") == 0
    assert "no purge so far" in capsys.readouterr().out
    assert pw(home, "retention", "purge", "--by", "dpo") == 0
    assert f"purged {dry['records']:,} observation(s)" in capsys.readouterr().out
    assert pw(home, "retention", "log", "--format", "json") == 0
    (logged,) = _json(capsys)["purges"]
    assert logged["actor"] == "dpo" and logged["records"] == dry["records"]
    # The claimed target kept its observations; the chain verifies with the purged ones in it.
    assert pw(home, "target", "show", str(leads["127.0.5.10"]["id"]), "--format", "json") == 0
    assert len(json.loads(capsys.readouterr().out)["observations"]) == 4
    assert pw(home, "evidence", "verify") == 0
    verified = capsys.readouterr().out
    assert f"{dry['records']} purged under retention" in verified and "OK" in verified
    assert pw(home, "retention", "purge", "--days", "0") == 2
    assert "at least 1 day" in capsys.readouterr().err
