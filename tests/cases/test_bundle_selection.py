"""`export_bundle(records=...)`: a bundle of exactly the (sensor, seq) chosen, on SQLite and
PostgreSQL (the storage suite's `engine` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from peerwatch.errors import EvidenceError
from peerwatch.evidence.bundle import export_bundle, verify_bundle
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, RecordFilter
from tests.evidence.helpers import observation


@pytest.fixture
def two_sensors(engine: Engine, tmp_path: Path) -> Engine:
    for sensor, first in (("sensor-a", 0), ("sensor-b", 100)):
        key = load_or_create(tmp_path / "keys", sensor)
        EvidenceLog(engine, key).append([observation(first + i) for i in range(12)])
    return engine


def test_chosen_records_across_sensors(two_sensors: Engine, tmp_path: Path) -> None:
    chosen = [("sensor-b", 4), ("sensor-a", 9), ("sensor-a", 2), ("sensor-a", 3)]
    out = tmp_path / "b"
    result = export_bundle(
        two_sensors, out, RecordFilter(), records=chosen, describe={"target": "T-000007"}
    )
    assert result.records == 4
    rows = [line.split("\t")[:2] for line in (out / "chain.tsv").read_text().splitlines()[1:]]
    assert rows == [["sensor-a", "2"], ["sensor-a", "3"], ["sensor-a", "9"], ["sensor-b", "4"]]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"] == {"records": 4, "target": "T-000007"}
    assert manifest["complete"] is False
    report = verify_bundle(out)
    assert report.ok, report.problems
    assert {r.sensor_id: r.checked for r in report.reports} == {"sensor-a": 3, "sensor-b": 1}


def test_a_missing_record_fails_and_leaves_nothing(two_sensors: Engine, tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(EvidenceError, match="sensor-a/13"):
        export_bundle(two_sensors, out, RecordFilter(), records=[("sensor-a", 1), ("sensor-a", 13)])
    assert not out.exists()
    assert list(tmp_path.glob(".b.*")) == []
