"""The sensors' status: key fingerprint, chain head, records, and observations of the last hour
and day by method and outcome, read from the evidence log (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

from peerwatch.web.site import create_app
from tests.leads.targets_support import T0, claim, log, probe
from tests.web.conftest import Site, login

HOUR = 3_600_000


def test_counts_by_method_and_outcome_in_the_last_hour_and_day(site: Site, tmp_path: Path) -> None:
    # The fixture's sensor s1 holds 4 bitfield/possession records at T0-3 s .. T0-0.5 s.
    s2 = log(site.app.engine, tmp_path / "keys2", sensor="s2")
    s2.append(
        [
            claim(T0 - 2 * HOUR, "127.0.1.50", 6881),  # last day, not last hour
            claim(T0 - 60_000, "127.0.1.51", 6881),
            probe(T0 - 30_000, "127.0.1.52", 6881, "C/1", outcome="refused", method="connect"),
            claim(T0 - 3 * 24 * HOUR, "127.0.1.53", 6881),  # older than a day
        ]
    )
    web = create_app(site.app, site.config)
    web.state.sensors_status.clock_ms = lambda: T0
    client = TestClient(web)
    login(client, "coord")
    doc = client.get("/api/v1/sensors").json()
    by_id = {s["id"]: s for s in doc["sensors"]}
    assert set(by_id) == {"s1", "s2"}
    one, two = by_id["s1"], by_id["s2"]
    assert (one["records"], one["head_seq"], one["last_hour"], one["last_day"]) == (4, 4, 4, 4)
    assert one["by_method"] == [
        {"method": "bitfield", "outcome": "possession", "last_hour": 4, "last_day": 4}
    ]
    assert (two["records"], two["head_seq"], two["last_hour"], two["last_day"]) == (4, 4, 2, 3)
    assert two["by_method"] == [
        {"method": "connect", "outcome": "refused", "last_hour": 1, "last_day": 1},
        {"method": "dht-get-peers", "outcome": "claim", "last_hour": 1, "last_day": 2},
    ]
    assert one["last_observed_ms"] == T0 - 500
    with site.app.engine.connect() as conn:
        key = conn.exec_driver_sql("select public_key from sensors where id = 's2'").scalar_one()
        link = conn.exec_driver_sql(
            "select link from evidence_records where sensor_id = 's2' and seq = 4"
        ).scalar_one()
    assert two["fingerprint"] == "sha256:" + hashlib.sha256(bytes(key)).hexdigest()
    assert two["head_link"] == bytes(link).hex()

    page = client.get("/sensors")
    assert page.status_code == 200 and page.headers["refresh"] == "15"
    assert two["fingerprint"] in page.text and "dht-get-peers" in page.text
    views = [e for e in site.app.audit.iter_entries() if e.action == "sensors.view"]
    assert [(e.actor, e.detail["sensors"]) for e in views] == [("coord", ["s1", "s2"])] * 2
    assert site.app.audit.verify().ok


def test_only_admins_and_coordinators(site: Site) -> None:
    for name, status in (("admin", 200), ("coord", 200), ("inv75", 403), ("auditor", 403)):
        client = site.signed_in(name)
        assert client.get("/sensors").status_code == status, name
        assert client.get("/api/v1/sensors").status_code == status, name
    assert site.client().get("/api/v1/sensors").status_code == 401
