"""The export on both databases of the storage suite (SQLite and PostgreSQL), with the leads
tests' stand-in enricher: the same package, verifying the same way."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from peerwatch.cases.export import CaseSources, export_case
from peerwatch.cases.verify import verify_case
from peerwatch.leads.workflow import LeadWorkflow
from peerwatch.watchlist.store import WatchlistStore
from tests.leads.targets_support import T0, claim, enricher, log, probe, store


def test_export_on_each_database(engine: Engine, tmp_path: Path) -> None:
    sensor = log(engine, tmp_path / "keys")
    sensor.append(
        [
            claim(T0, "127.0.1.5", 6881),
            probe(T0 + 10, "127.0.2.6", 7000, "Deluge/2.1.1", content=2),
            probe(T0 + 1_001, "127.0.1.5", 6881, "qBittorrent/4.6.0"),
        ]
    )
    targets = store(engine, enricher({"127.0.1.0/24": ("75", 64500), "127.0.2.0/24": ("13", 1)}))
    targets.refresh()
    (tid,) = [t.id for t in targets.ranked(as_of_ms=T0) if t.ips == ("127.0.1.5",)]
    LeadWorkflow(engine, clock_ms=lambda: T0 + 5).claim(tid, unit="U75", actor="inv. A")
    out = tmp_path / "case"
    sources = CaseSources(engine, targets, WatchlistStore(engine), LeadWorkflow(engine))
    report = export_case(sources, tid, out, as_of_ms=T0, clock_ms=lambda: T0 + 60_000)
    doc = json.loads((out / "case.json").read_text())
    assert [(o["record"], o["observed"], o["port"]) for o in doc["observations"]] == [
        ("s1/1", "2025-11-24T16:00:00.000Z", 6881),
        ("s1/3", "2025-11-24T16:00:01.001Z", 6881),
    ]
    assert doc["exported"] == "2025-11-24T16:01:00.000Z" and report.exported_ms == T0 + 60_000
    assert doc["lead"]["state"] == "claimed" and doc["lead_history"][0]["actor"] == "inv. A"
    assert doc["target"]["unit"] == "U75"
    # Not on the (empty) watchlist: said, not invented.
    assert [h["matches"] for h in doc["hash_matches"]] == [[]]
    check = verify_case(out)
    assert check.ok, check.problems
    assert check.observations == 2
