"""Evidence bundles: export, verify with peerwatch and with openssl alone, detect tampering."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine

from peerwatch.errors import EvidenceError
from peerwatch.evidence.bundle import export_bundle, verify_bundle
from peerwatch.evidence.keys import SensorKey, load_or_create
from peerwatch.evidence.log import EvidenceLog, RecordFilter
from tests.evidence.helpers import observation

N = 10


@pytest.fixture
def key(tmp_path: Path) -> SensorKey:
    return load_or_create(tmp_path / "keys", "sensor-a")


@pytest.fixture
def log_engine(engine: Engine, key: SensorKey) -> Engine:
    # Records 3 and 7 share an IP, so a per-IP bundle is a selection with a gap.
    obs = [observation(i, ip="127.0.9.9" if i in (2, 6) else None) for i in range(N)]
    EvidenceLog(engine, key).append(obs)
    return engine


def test_full_bundle_verifies(log_engine: Engine, key: SensorKey, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = export_bundle(log_engine, out, RecordFilter())
    assert result.records == N
    report = verify_bundle(out, {"sensor-a": key.private.public_key()})
    assert report.ok, report.problems
    assert report.complete
    assert report.reports[0].checked == N
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sensors"]["sensor-a"]["count"] == N
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "chain.tsv",
        "keys",
        "manifest.json",
        "records.jsonl",
        "verify.sh",
    ]


def test_selection_bundle_verifies_records_alone(
    log_engine: Engine, key: SensorKey, tmp_path: Path
) -> None:
    out = tmp_path / "b"
    result = export_bundle(log_engine, out, RecordFilter(ip="127.0.9.9"))
    assert result.records == 2
    report = verify_bundle(out)
    assert report.ok, report.problems
    assert not report.complete
    assert [line.split("\t")[1] for line in (out / "chain.tsv").read_text().splitlines()[1:]] == [
        "3",
        "7",
    ]


def _tamper_record(out: Path) -> None:
    lines = (out / "records.jsonl").read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"port":6884', b'"port":6885')
    (out / "records.jsonl").write_bytes(b"\n".join(lines))


def _drop_record(out: Path) -> None:
    for name, skip in (("records.jsonl", 3), ("chain.tsv", 4)):
        lines = (out / name).read_text().splitlines(keepends=True)
        del lines[skip]
        (out / name).write_text("".join(lines))


@pytest.mark.parametrize("tamper", [_tamper_record, _drop_record], ids=["edit", "delete"])
def test_tampered_bundle_fails(log_engine: Engine, tmp_path: Path, tamper: object) -> None:
    out = tmp_path / "b"
    export_bundle(log_engine, out, RecordFilter())
    assert callable(tamper)
    tamper(out)
    report = verify_bundle(out)
    assert not report.ok
    text = "\n".join(map(str, report.problems))
    assert "records.jsonl: SHA-256 differs from manifest.json" in text
    assert "record 4" in text


def test_export_refuses_a_non_empty_folder(log_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(EvidenceError, match="exists and is not an empty folder"):
        export_bundle(log_engine, out, RecordFilter())
    assert [p.name for p in out.iterdir()] == ["x"]


def test_failed_export_leaves_nothing(
    log_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peerwatch.evidence.bundle as bundle_module

    def boom(_: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "_fsync", boom)
    out = tmp_path / "exports" / "b"
    with pytest.raises(OSError, match="disk full"):
        export_bundle(log_engine, out, RecordFilter())
    assert list((tmp_path / "exports").iterdir()) == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_script_verifies_and_catches_an_edit(log_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "b"
    export_bundle(log_engine, out, RecordFilter())
    ok = subprocess.run(["bash", str(out / "verify.sh")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{N} records checked, 0 problems" in ok.stdout
    _tamper_record(out)
    bad = subprocess.run(["bash", str(out / "verify.sh")], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "record sensor-a/4: content does not match its link" in bad.stdout


def test_bundle_key_differing_from_trusted_key_fails(log_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "b"
    export_bundle(log_engine, out, RecordFilter())
    stranger = load_or_create(tmp_path / "stranger", "sensor-a")
    report = verify_bundle(out, {"sensor-a": stranger.private.public_key()})
    assert not report.ok
    assert any("differs from the trusted key" in str(p) for p in report.problems)


DATA = Path(__file__).parent / "data"


def test_committed_version_1_bundle_still_verifies() -> None:
    """House rule 14: a bundle written by an earlier release must keep verifying."""
    report = verify_bundle(DATA / "bundle-v1")
    assert report.ok, report.problems
    assert report.reports[0].checked == 6
    assert (
        report.key_fingerprints["golden-sensor"]
        == json.loads((DATA / "bundle-v1" / "manifest.json").read_text())["sensors"][
            "golden-sensor"
        ]["public_key_sha256"]
    )
