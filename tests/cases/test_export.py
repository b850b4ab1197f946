"""Case packages end to end: export a target, verify it every way, tamper with it, break it."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from peerwatch.cases import export as export_module
from peerwatch.cases.document import iso_ms
from peerwatch.cases.export import CaseReport, CaseSources, export_case
from peerwatch.cases.verify import verify_case
from peerwatch.errors import EvidenceError, InputError
from peerwatch.evidence.bundle import verify_bundle
from peerwatch.evidence.record import decode
from tests.cases.conftest import AS_OF_MS, CGNAT, PARIS, RHONE, S1, S2, Lab, pw
from tests.leads.targets_support import T0


def _export(
    lab: Lab, ip: str, out: Path, on_export: Callable[[CaseReport], None] | None = None
) -> CaseReport:
    tid = lab.target_of(ip)
    app = lab.app()
    try:
        sources = CaseSources(app.engine, app.targets, app.watchlist, app.leads)
        return export_case(sources, tid, out, as_of_ms=AS_OF_MS, on_export=on_export)
    finally:
        app.close()


def test_case_json_is_the_targets_observations(lab: Lab) -> None:
    out = lab.tmp / "case"
    report = _export(lab, PARIS, out)
    doc = json.loads((out / "case.json").read_text())
    assert (doc["format"], doc["version"]) == ("peerwatch-case", 1)
    assert doc["target"]["label"] == report.label and doc["target"]["ips"] == [PARIS]
    expected = sorted(
        [(o, "s1") for o in S1 if o.ip == PARIS] + [(o, "s2") for o in S2 if o.ip == PARIS],
        key=lambda x: x[0].observed_ms,
    )
    got = doc["observations"]
    assert [(o["sensor"], o["observed"], o["ip"], o["port"], o["method"]) for o in got] == [
        (sensor, iso_ms(o.observed_ms), o.ip, o.port, o.method) for o, sensor in expected
    ]
    # UTC with milliseconds: T0 is 2025-11-24T16:00:00Z, the first probe is 1,234 ms later.
    assert got[1]["observed"] == "2025-11-24T16:00:01.234Z"
    assert {o["port"] for o in got} == {51413}
    assert [o["evidence"] for o in got] == [
        "claim",
        "possession",
        "possession",
        "possession",
        "possession",
    ]
    # The score components add up; jurisdiction and unit from the real GeoIP and boundaries.
    assert doc["score"]["total"] == sum(c["points"] for c in doc["score"]["components"]) > 0
    assert doc["target"]["jurisdiction"]["code"] == "75"
    assert doc["target"]["unit"] == "BRIGADE-PARIS"
    (placement,) = doc["placements"]
    assert placement["asn"] == 64500 and placement["ports"] == [51413]
    assert any("built 2026-11-01" in s for s in placement["sources"])
    # Hash matches carry list provenance and no item name.
    by_key = {h["content_key"]: h for h in doc["hash_matches"]}
    assert set(by_key) == {o["content_key"] for o in got}
    (entry,) = by_key[got[1]["content_key"]]["matches"]
    assert (entry["list"], entry["list_version"], entry["location"]) == ("cases", 1, "line 2")
    assert entry["source"].endswith("cases.csv") and len(entry["source_sha256"]) == 64
    assert "name" not in entry
    # Requisition lines: possession first, to the second, with the source port.
    lines = doc["requisition"]
    assert lines[0]["basis"] == "possession" and lines[-1]["basis"] == "claim"
    assert lines[0]["time"] == "2025-11-24T16:00:01Z" and lines[0]["port"] == 51413
    assert any("claims" in c for c in doc["caveats"])
    assert not any("evidences possession" in c for c in doc["caveats"])
    # The same lines as CSV, for the provider.
    rows = list(csv.DictReader(io.StringIO((out / "requisition.csv").read_text())))
    assert [(r["ip"], r["port"], r["time_utc"], r["evidence"]) for r in rows] == [
        (x["ip"], str(x["port"]), x["time"], x["evidence"]) for x in lines
    ]


def test_a_target_without_possession_says_so(lab: Lab) -> None:
    out = lab.tmp / "case"
    _export(lab, RHONE, out)
    doc = json.loads((out / "case.json").read_text())
    assert doc["caveats"][0].startswith("No observation of this target evidences possession")
    assert [o["evidence"] for o in doc["observations"]] == ["claim", "negative"]
    assert [x["basis"] for x in doc["requisition"]] == ["claim"]


def test_bundle_holds_exactly_this_targets_records_and_verifies(lab: Lab) -> None:
    out = lab.tmp / "case"
    report = _export(lab, PARIS, out)
    records = [
        decode(line) for line in (out / "evidence" / "records.jsonl").read_bytes().splitlines()
    ]
    assert {r.observation.ip for r in records} == {PARIS}
    assert sorted((r.sensor, r.seq) for r in records) == [
        ("s1", 1),
        ("s1", 3),
        ("s1", 5),
        ("s1", 7),
        ("s2", 1),
    ]
    assert report.observations == 5 and report.sensors == ("s1", "s2")
    checked = verify_bundle(out / "evidence")
    assert checked.ok, checked.problems
    assert not checked.complete
    assert sum(r.checked for r in checked.reports) == 5
    bundle_manifest = json.loads((out / "evidence" / "manifest.json").read_text())
    assert bundle_manifest["selection"] == {"records": 5, "target": report.label}
    assert pw(lab.home, "evidence", "verify-bundle", str(out / "evidence")) == 0
    check = verify_case(out)
    assert check.ok, check.problems
    # The openssl-only script shipped in the bundle agrees.
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    script = subprocess.run(
        ["bash", str(out / "evidence" / "verify.sh")], capture_output=True, text=True, check=False
    )
    assert script.returncode == 0, script.stdout + script.stderr
    assert "5 records checked, 0 problems" in script.stdout


def test_manifest_has_the_sha256_of_every_file(lab: Lab) -> None:
    import hashlib

    out = lab.tmp / "case"
    report = _export(lab, CGNAT, out)
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [n for n in on_disk if n != "manifest.json"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert {"case.json", "case.pdf", "requisition.csv", "evidence/records.jsonl"} <= set(
        manifest["files"]
    )
    assert hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == (
        report.manifest_sha256
    )
    doc = json.loads((out / "case.json").read_text())
    # CGNAT: the port is what names the subscriber, and the caveat says so.
    assert doc["target"]["flags"] == ["cgnat"]
    assert any("Carrier-grade NAT" in c and "source port" in c for c in doc["caveats"])
    assert [o["port"] for o in doc["observations"]] == [40123, 40123]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("records", "evidence/records.jsonl: SHA-256 differs"),
        ("case.json", "case.json: SHA-256 differs"),
        ("case.pdf", "case.pdf: SHA-256 differs"),
        ("added", "notes.txt: not listed in manifest.json"),
    ],
)
def test_tampering_fails_verification(lab: Lab, where: str, expected: str) -> None:
    out = lab.tmp / "case"
    _export(lab, PARIS, out)
    assert verify_case(out).ok
    if where == "records":
        # One line of the signed records: the port of an observation.
        path = out / "evidence" / "records.jsonl"
        lines = path.read_bytes().split(b"\n")
        assert b'"port":51413' in lines[1]
        lines[1] = lines[1].replace(b'"port":51413', b'"port":51414')
        path.write_bytes(b"\n".join(lines))
        checked = verify_bundle(out / "evidence")
        assert [p.kind for p in checked.problems if not isinstance(p, str)] == ["chain"]
        assert pw(lab.home, "evidence", "verify-bundle", str(out / "evidence")) == 4
        if shutil.which("openssl") is not None:
            script = subprocess.run(
                ["bash", str(out / "evidence" / "verify.sh")],
                capture_output=True,
                text=True,
                check=False,
            )
            assert script.returncode != 0 and "content does not match its link" in script.stdout
    elif where == "case.json":
        path = out / "case.json"
        path.write_text(path.read_text().replace('"port": 51413', '"port": 51999', 1))
    elif where == "case.pdf":
        path = out / "case.pdf"
        path.write_bytes(path.read_bytes() + b"%")
    else:
        (out / "notes.txt").write_text("added later")
    check = verify_case(out)
    assert [p for p in check.problems if p.startswith(expected)], check.problems
    assert pw(lab.home, "case", "verify", str(out)) == 4


def test_case_json_edited_and_redigested_is_still_caught(lab: Lab) -> None:
    """Someone who edits a port in case.json *and* fixes the manifest digest is caught by the
    comparison with the signed record."""
    import hashlib

    out = lab.tmp / "case"
    _export(lab, PARIS, out)
    path = out / "case.json"
    doc = json.loads(path.read_text())
    doc["observations"][1]["port"] = 51999
    path.write_text(json.dumps(doc, indent=2))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["case.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    check = verify_case(out)
    assert [p for p in check.problems if "port 51999" in p and "signed record" in p], check.problems


def test_refuses_a_non_empty_folder_and_unknown_target(lab: Lab) -> None:
    out = lab.tmp / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        _export(lab, PARIS, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    app = lab.app()
    try:
        sources = CaseSources(app.engine, app.targets, app.watchlist)
        with pytest.raises(InputError, match="no target T-000999"):
            export_case(sources, 999, lab.tmp / "none")
    finally:
        app.close()
    assert not (lab.tmp / "none").exists()
    # An empty folder is fine.
    empty = lab.tmp / "empty"
    empty.mkdir()
    assert _export(lab, RHONE, empty).out == empty
    assert (empty / "case.pdf").is_file()


def test_a_failure_midway_leaves_no_output(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(export_module, "write_pdf", broken)
    out = lab.tmp / "case"
    with pytest.raises(RuntimeError, match="renderer crashed"):
        _export(lab, PARIS, out)
    assert not out.exists()
    assert [p.name for p in lab.tmp.iterdir() if p.name.startswith(".case")] == []


def test_an_audit_failure_exports_nothing(lab: Lab) -> None:
    seen: list[CaseReport] = []

    def audit(report: CaseReport) -> None:
        seen.append(report)
        raise EvidenceError("audit log unavailable")

    out = lab.tmp / "case"
    with pytest.raises(EvidenceError, match="audit log unavailable"):
        _export(lab, PARIS, out, on_export=audit)
    assert not out.exists()
    assert len(seen) == 1 and seen[0].out == out and seen[0].observations == 5


def test_observation_times_are_utc_milliseconds() -> None:
    assert iso_ms(T0) == "2025-11-24T16:00:00.000Z"
    assert iso_ms(T0 + 1_234) == "2025-11-24T16:00:01.234Z"
    assert iso_ms(T0 + 999) == "2025-11-24T16:00:00.999Z"
