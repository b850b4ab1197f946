"""`peerwatch leads` and `peerwatch target ...` end to end, on SQLite in a temporary --home.

The lab run of the acceptance criteria: peers placed by a generated GeoIP database (City + ASN
.mmdb, real reader) in several départements, one overseas and one over IPv6, French département
boundaries imported as jurisdictions, units covering them, a benign watchlist.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.lab.geoip import Placed, build_geoip
from peerwatch.settings import Settings
from tests.leads.targets_support import DAY, T0, claim, key, probe
from tests.shared_data import boundaries_path, require_boundaries

BOUNDARIES = boundaries_path()
AS_OF = "2025-11-27T12:00:00Z"  # two calendar days (UTC) after the last sighting, T0 + DAY


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


@pytest.fixture
def lab_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    require_boundaries()
    home = tmp_path / "home"
    geo = build_geoip(
        tmp_path / "geo",
        [
            Placed("127.0.5.0/24", "75", asn=64500),  # Paris
            Placed("127.0.6.0/24", "13", asn=64500),  # Bouches-du-Rhône, same provider
            Placed("127.0.7.0/24", "971", asn=64501),  # Guadeloupe
            Placed("127.0.8.0/24", "69", asn=64502),  # Rhône
            Placed("2001:db8:5::/48", "33", asn=64503),  # Gironde, IPv6
        ],
        boundaries=BOUNDARIES,
    )
    units = tmp_path / "units.csv"
    units.write_text(
        "unit,name,jurisdictions\n"
        "BRIGADE-PARIS,Brigade Paris,75;92;93;94\n"
        "SUD,Section Sud,13;33;69\n"
        "ANTILLES,Section Antilles,971;972\n"
    )
    lst = tmp_path / "cases.csv"
    lst.write_text(
        "btih,category,size\n" + "".join(f"{key(n)[5:]},{cat},{size}\n" for n, cat, size in _LIST)
    )
    assert pw(home, "geoip", "set", "--city", str(geo.city), "--asn", str(geo.asn)) == 0
    assert (
        pw(
            home,
            "jurisdictions",
            "import",
            str(BOUNDARIES),
            "--code-property",
            "code",
            "--name-property",
            "nom",
        )
        == 0
    )
    assert pw(home, "units", "import", str(units)) == 0
    assert pw(home, "watchlist", "import", str(lst), "--list", "cases") == 0
    app = App(Settings.resolve(home=home))
    try:
        app.evidence.append(_OBSERVATIONS)
    finally:
        app.close()
    capsys.readouterr()
    return home


_LIST = [(1, "1", 2 << 30), (2, "2", 700 << 20), (3, "3", 100 << 20)]

_OBSERVATIONS = [
    # Paris peer: two items, complete; changes address into the 13 the next day (same provider).
    claim(T0, "127.0.5.10", 51413),
    probe(T0 + 1_000, "127.0.5.10", 51413, "qBittorrent/4.6.0", content=1, peer_id="aa" * 20),
    probe(T0 + 2_000, "127.0.5.10", 51413, "qBittorrent/4.6.0", content=2, peer_id="aa" * 20),
    probe(T0 + DAY, "127.0.6.20", 51413, "qBittorrent/4.6.0", content=1, peer_id="bb" * 20),
    # Two peers behind one address in Guadeloupe: different ports and clients.
    claim(T0, "127.0.7.30", 6881),
    claim(T0, "127.0.7.30", 6882),
    probe(T0 + 10, "127.0.7.30", 6881, "Transmission/4.0.5", content=3),
    probe(T0 + 20, "127.0.7.30", 6882, "Deluge/2.1.1", content=2, ppm=250_000),
    # IPv6 peer in Gironde, privacy address changed within its /64.
    probe(T0, "2001:db8:5:1::10", 7000, "qBittorrent/4.6.0", content=3),
    probe(T0 + DAY, "2001:db8:5:1:abcd::2", 7000, "qBittorrent/4.6.0", content=3),
    # Rhône: claimed only, then refused.
    claim(T0 + DAY, "127.0.8.40", 6881, content=1),
    probe(T0 + DAY + 5, "127.0.8.40", 6881, None, outcome="refused", method="connect"),
]


def test_leads_json_routes_ranks_and_explains(
    lab_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pw(lab_home, "leads", "--format", "json", "--as-of", AS_OF) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and doc["count"] == 5 == len(doc["leads"])
    assert doc["as_of"] == AS_OF
    by_ip = {lead["ips"][0]: lead for lead in doc["leads"]}
    routed = sorted((x["ips"][0], x["jurisdiction"]["code"], x["unit"]) for x in doc["leads"])
    assert routed == [
        ("127.0.5.10", "13", "SUD"),  # moved into the 13: routed where it is now
        ("127.0.7.30", "971", "ANTILLES"),  # two peers behind one address
        ("127.0.7.30", "971", "ANTILLES"),
        ("127.0.8.40", "69", "SUD"),
        ("2001:db8:5:1::10", "33", "SUD"),
    ]
    assert {x["jurisdiction"]["method"] for x in doc["leads"]} == {"polygon"}
    # Each target's score is the sum of its components, and the order is by score.
    for lead in doc["leads"]:
        assert lead["score"] == sum(c["points"] for c in lead["components"])
        assert lead["lead"]["state"] == "new"
        assert lead["location"]["sources"][0].startswith("GeoLite2-City built 2026-11-01")
    scores = [x["score"] for x in doc["leads"]]
    assert scores == sorted(scores, reverse=True)
    assert [x["rank"] for x in doc["leads"]] == [1, 2, 3, 4, 5]
    mover = by_ip["127.0.5.10"]
    assert mover["ips"] == ["127.0.5.10", "127.0.6.20"] and doc["leads"][0] is mover
    assert [x["kind"] for x in mover["links"]] == ["origin", "address-change"]
    assert "moved from 127.0.5.10" in mover["links"][1]["reason"]
    points = {c["name"]: c["points"] for c in mover["components"]}
    # 2 items; category "1"; 2 GiB + 700 MiB = 2748 MiB -> 12 bits; days 2; 2 days silent; 2 seeds
    assert points == {
        "items": 200,
        "severity": 450,
        "volume": 480,
        "days": 20,
        "recency": 280,
        "seeding": 200,
        "networks": 0,
        "claims": 0,
    }
    v6 = by_ip["2001:db8:5:1::10"]
    assert v6["ips"] == ["2001:db8:5:1::10", "2001:db8:5:1:abcd::2"]
    assert v6["links"][1]["kind"] == "ipv6-prefix"
    nat = [x for x in doc["leads"] if x["ips"] == ["127.0.7.30"]]
    assert len(nat) == 2 and {x["links"][0]["port"] for x in nat} == {6881, 6882}
    refused = by_ip["127.0.8.40"]
    assert {c["name"]: c["points"] for c in refused["components"] if c["points"]} == {
        "claims": 10,
        "days": 10,
        "recency": 280,
    }


def test_leads_filters_csv_and_table(lab_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pw(lab_home, "leads", "--unit", "SUD", "--format", "csv", "--as-of", AS_OF) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["unit"] for r in rows] == ["SUD"] * 3
    assert {r["jurisdiction"] for r in rows} == {"13", "33", "69"}
    assert all(int(r["score"]) == sum(int(r[f"points_{c}"]) for c in _COMPONENTS) for r in rows)
    assert pw(lab_home, "leads", "--jurisdiction", "971", "--as-of", AS_OF) == 0
    text = capsys.readouterr().out
    assert "2 leads" in text and "971 Guadeloupe" in text and "ANTILLES" in text
    assert pw(lab_home, "leads", "--jurisdiction", "2A") == 0
    assert "no targets for these filters" in capsys.readouterr().out


_COMPONENTS = ("items", "severity", "volume", "days", "recency", "seeding", "networks", "claims")


def test_target_show_and_split(lab_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pw(lab_home, "leads", "--format", "json", "--as-of", AS_OF) == 0
    mover = json.loads(capsys.readouterr().out)["leads"][0]
    label = mover["label"]
    assert pw(lab_home, "target", "show", label, "--format", "json", "--as-of", AS_OF) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["target"] == {k: v for k, v in mover.items() if k not in ("rank", "lead")}
    assert [o["seq"] for o in shown["observations"]] == [1, 2, 3, 4]
    assert pw(lab_home, "target", "show", str(mover["id"])) == 0
    text = capsys.readouterr().out
    assert "moved from 127.0.5.10" in text and "recency" in text and "GeoLite2-City" in text

    assert pw(lab_home, "target", "split", label, "--ip", "127.0.6.20", "--by", "inv. A") == 0
    assert "127.0.6.20 moved" in capsys.readouterr().out
    assert pw(lab_home, "leads", "--format", "json", "--as-of", AS_OF) == 0
    after = {x["id"]: x for x in json.loads(capsys.readouterr().out)["leads"]}
    assert after[mover["id"]]["ips"] == ["127.0.5.10"]
    assert after[mover["id"]]["unit"] == "BRIGADE-PARIS"
    (new,) = [x for x in after.values() if x["ips"] == ["127.0.6.20"]]
    assert new["links"][0]["kind"] == "split" and "by inv. A" in new["links"][0]["reason"]

    assert pw(lab_home, "target", "split", label, "--ip", "127.0.5.10") == 2
    assert "nothing would remain" in capsys.readouterr().err
    assert pw(lab_home, "target", "show", "T-000999") == 2
    assert "no target T-000999" in capsys.readouterr().err
    assert pw(lab_home, "target", "split", label) == 2
    assert pw(lab_home, "target", "show", "abc") == 2
