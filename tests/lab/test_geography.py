"""The lab's geography: every lab peer placed in a département of the documented rotation, read
back through the product's own enrichment (real .mmdb reader, shared boundaries, units import)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.lab import geography
from peerwatch.lab.swarm import Lab, LabPeer
from peerwatch.settings import Settings
from tests.shared_data import boundaries_path, require_boundaries

BOUNDARIES = boundaries_path()

# Twelve IPv4 peers (two turns of the rotation) and the IPv6 peer, as `Lab` numbers them.
PEERS = [LabPeer(i, f"127.0.13.{i + 1}", 6881, {}, "enabled") for i in range(12)] + [
    LabPeer(12, "::1", 40000, {}, "enabled")
]


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


def test_the_rotation_is_documented_and_covers_metropole_and_overseas() -> None:
    assert [geography.departement_of(i) for i in range(7)] == [
        "75",
        "69",
        "13",
        "33",
        "971",
        "974",
        "75",
    ]
    metropolitan = [d for d in geography.ROTATION if d not in geography.OVERSEAS]
    assert len(metropolitan) >= 3 and set(geography.ROTATION) >= geography.OVERSEAS
    # Every département of the rotation has exactly one unit, and its own AS number.
    for d in geography.ROTATION:
        assert sum(d in u.jurisdictions for u in geography.UNITS) == 1, d
    assert len(set(geography.ASN.values())) == len(geography.ROTATION)
    assert all(64496 <= asn <= 64511 for asn in geography.ASN.values())  # RFC 5398
    assert geography.unit_of("971") == "LAB-ANTILLES" and geography.unit_of("2A") is None


def test_units_csv_is_the_documented_format() -> None:
    lines = geography.units_csv().splitlines()
    assert lines[0] == "unit,name,jurisdictions"
    assert "LAB-PARIS,Lab unit Paris and petite couronne,75;92;93;94" in lines
    assert 'LAB-ANTILLES,"Lab unit Antilles, Guyane",971;972;973' in lines
    assert "LAB-NATIONAL,Lab national unit (takes cases by hand)," in lines


def test_every_peer_is_placed_where_the_rotation_says(tmp_path: Path) -> None:
    require_boundaries()
    geo = geography.write_geography(PEERS, tmp_path / "geo", boundaries=BOUNDARIES)
    assert geo.placed == {p.ip: geography.ROTATION[p.index % 6] for p in PEERS}
    assert geo.placed["::1"] == "75"  # index 12
    home = tmp_path / "home"
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
    assert pw(home, "units", "import", str(geo.units_csv)) == 0
    app = App(Settings.resolve(home=home))
    try:
        for p in PEERS:
            where = app.enricher.place(p.ip)
            d = geo.placed[p.ip]
            assert where.jurisdiction == d, (p.ip, where)
            assert where.jurisdiction_method == "polygon"
            assert where.jurisdiction_confidence == "certain"
            assert where.unit == geo.unit(p.ip) == geography.unit_of(d)
            assert where.asn == geography.ASN[d]
            assert where.country == {"971": "GP", "974": "RE"}.get(d, "FR")
        # Addresses of no lab peer are not placed.
        assert app.enricher.place("127.0.13.200").jurisdiction is None
        assert app.enricher.place("127.0.14.1").jurisdiction is None
    finally:
        app.close()


@pytest.mark.skipif(importlib.util.find_spec("libtorrent") is None, reason="lab extra missing")
def test_ipv6_is_one_more_peer_on_ipv6_loopback_and_off_by_default(tmp_path: Path) -> None:
    plain = Lab(tmp_path / "plain", peers=3, tracker=False, peer_net="127.0.13.")
    plain.prepare()
    assert [p.ip for p in plain.members] == ["127.0.13.1", "127.0.13.2", "127.0.13.3"]
    assert plain.dht6_node is None and not (tmp_path / "plain" / "peers" / "dht6").exists()

    lab = Lab(tmp_path / "v6", peers=3, tracker=False, peer_net="127.0.13.", ipv6=True)
    lab.prepare()
    assert [p.ip for p in lab.members[:3]] == [p.ip for p in plain.members]
    v6 = lab.members[3]
    assert (v6.index, v6.ip) == (3, "::1")
    assert set(v6.holds) == {n for n, t in lab.torrents.items() if t.watched}
    assert set(v6.holds.values()) == {"seed"}
    assert lab.dht6_node is not None and lab.dht6_node[1] != v6.port
    import json

    def config(name: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (lab.workdir / "peers" / name / "config.json").read_text()
        )
        return data

    # Each family's DHT starts from nodes of its own family (BEP 32).
    assert config(v6.name)["dht_nodes"] == [list(lab.dht6_node)]
    assert config("dht6")["dht_nodes"] == [["::1", v6.port]]
    assert config("dht6")["torrents"] == []
    assert all(":" not in ip for ip, _port in config("peer-00")["dht_nodes"])  # type: ignore[attr-defined]
