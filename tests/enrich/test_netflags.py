"""Network flag lists: formats, errors naming file and line, versioned atomic imports, lookups."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from peerwatch.enrich.netflags import NetFlags, NetFlagStore, parse_flag_list
from peerwatch.enrich.placement import builtin_flags
from peerwatch.errors import InputError
from peerwatch.storage.schema import flag_entries, flag_lists

TOR = b"""# Tor bulk exit list (test addresses, RFC 5737)
192.0.2.10
192.0.2.11   # trailing comment

198.51.100.0/30
192.0.2.10
"""

TORDNSEL = b"""ExitNode 0011BD2485AD45D984EC4159C88FC066E5E3300E
Published 2026-11-24 10:00:00
LastStatus 2026-11-24 11:00:00
ExitAddress 192.0.2.20 2026-11-24 11:05:00
"""

ASNS = b"""asn,name
AS64496,"Example VPN, Inc."
64497;Other VPN
64498\tTabbed
AS64499
203.0.113.0/24,a hosting range
"""


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_tor_list_with_comments_blank_lines_and_duplicates(tmp_path: Path) -> None:
    entries = parse_flag_list(tmp_path / "tor.txt", "tor", TOR)
    assert [(e.line, str(e.network)) for e in entries] == [
        (2, "192.0.2.10/32"),
        (3, "192.0.2.11/32"),
        (5, "198.51.100.0/30"),
    ]


def test_tordnsel_format(tmp_path: Path) -> None:
    (e,) = parse_flag_list(tmp_path / "exits", "tor", TORDNSEL)
    assert (e.line, str(e.network), e.name) == (4, "192.0.2.20/32", None)


def test_asn_lists_with_names_header_and_networks(tmp_path: Path) -> None:
    entries = parse_flag_list(tmp_path / "vpn.csv", "vpn", ASNS)
    assert [(e.line, e.asn, e.name) for e in entries if e.asn] == [
        (2, 64496, "Example VPN, Inc."),
        (3, 64497, "Other VPN"),
        (4, 64498, "Tabbed"),
        (5, 64499, None),
    ]
    (net,) = [e for e in entries if e.network is not None]
    assert (net.line, str(net.network), net.name) == (6, "203.0.113.0/24", "a hosting range")


@pytest.mark.parametrize(
    ("kind", "data", "line", "words"),
    [
        ("tor", b"192.0.2.1\nnot-an-ip\n", "line 2", "expected an IP address"),
        ("tor", b"# exits\nAS64496\n", "line 2", "is an AS number"),
        ("vpn", b"AS64496\nAS99999999999\n", "line 2", "expected an AS number"),
        ("vpn", b"AS64496\nAS4294967296\n", "line 2", "out of range"),
        ("hosting", b"AS64496\nasn,name\n", "line 2", "expected an AS number"),
        ("mobile", b"AS0\n", "line 1", "out of range"),
    ],
)
def test_bad_lines_name_file_and_line(
    tmp_path: Path, kind: str, data: bytes, line: str, words: str
) -> None:
    path = tmp_path / "list.txt"
    with pytest.raises(InputError) as e:
        parse_flag_list(path, kind, data)
    assert e.value.source == str(path) and e.value.location == line
    assert words in str(e.value)


def test_empty_list_unknown_kind_and_binary_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no entries"):
        parse_flag_list(tmp_path / "x", "tor", b"# nothing\n\n")
    with pytest.raises(InputError, match="unknown kind 'proxy'"):
        parse_flag_list(tmp_path / "x", "proxy", b"192.0.2.1\n")
    with pytest.raises(InputError, match="not UTF-8"):
        parse_flag_list(tmp_path / "x", "tor", b"\xff\xfe\x00")


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("100.64.0.0", {"cgnat"}),
        ("100.127.255.255", {"cgnat"}),
        ("::ffff:100.100.1.1", {"cgnat"}),
        ("100.63.255.255", set()),
        ("100.128.0.0", set()),
        ("127.0.0.1", set()),
        ("2001:db8::1", set()),
    ],
)
def test_builtin_cgnat_space_rfc6598(ip: str, expected: set[str]) -> None:
    assert builtin_flags(ip) == expected


def test_lookup_by_address_network_and_asn() -> None:
    flags = NetFlags(
        asns={"vpn": {64496}, "mobile": {64497}, "hosting": {64496}},
        networks={
            "tor": [ipaddress.ip_network("192.0.2.10/32"), ipaddress.ip_network("2001:db8::/126")],
            "hosting": [ipaddress.ip_network("203.0.113.0/24")],
        },
    )
    assert flags.flags("192.0.2.10", None) == {"tor"}
    assert flags.flags("::ffff:192.0.2.10", None) == {"tor"}
    assert flags.flags("2001:db8::3", None) == {"tor"}
    assert flags.flags("2001:db8::4", None) == set()
    assert flags.flags("203.0.113.200", 64497) == {"hosting", "mobile"}
    assert flags.flags("198.51.100.1", 64496) == {"vpn", "hosting"}
    assert flags.flags("100.64.9.9", 64497) == {"cgnat", "mobile"}
    assert flags.flags("198.51.100.1", None) == set()


def _count(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        lists = conn.execute(select(func.count()).select_from(flag_lists)).scalar_one()
        entries = conn.execute(select(func.count()).select_from(flag_entries)).scalar_one()
    return lists, entries


def test_imports_are_versioned_per_kind_and_idempotent(engine: Engine, tmp_path: Path) -> None:
    store = NetFlagStore(engine, clock_ms=lambda: 1_764_000_000_000)
    tor = _write(tmp_path, "tor.txt", TOR)
    r = store.import_file(tor, "tor")
    assert (r.kind, r.version, r.entries, r.unchanged) == ("tor", 1, 3, False)
    assert store.import_file(tor, "tor").unchanged
    vpn = store.import_file(_write(tmp_path, "vpn.csv", ASNS), "vpn")
    assert (vpn.version, vpn.entries) == (1, 5)
    tor2 = store.import_file(_write(tmp_path, "tor2.txt", b"192.0.2.99\n"), "tor")
    assert (tor2.version, tor2.unchanged) == (2, False)
    infos = {i.kind: i for i in store.lists()}
    assert (infos["tor"].version, infos["tor"].entries, infos["vpn"].version) == (2, 1, 1)
    assert infos["tor"].label == "tor list v2 imported 2025-11-24 (tor2.txt)"
    snap = store.snapshot()
    assert snap.flags("192.0.2.99", None) == {"tor"}
    assert snap.flags("192.0.2.10", None) == set()  # version 1 is no longer active
    assert snap.flags("192.0.2.1", 64497) == {"vpn"}
    assert snap.flags("203.0.113.5", None) == {"vpn"}
    assert snap.sources() == (
        "tor list v2 imported 2025-11-24 (tor2.txt)",
        "vpn list v1 imported 2025-11-24 (vpn.csv)",
    )


def test_a_bad_file_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    store = NetFlagStore(engine)
    store.import_file(_write(tmp_path, "tor.txt", TOR), "tor")
    before = _count(engine)
    bad = _write(tmp_path, "bad.txt", b"192.0.2.50\n192.0.2.51\n192.0.2.x\n")
    with pytest.raises(InputError) as e:
        store.import_file(bad, "tor")
    assert str(e.value).startswith(f"{bad}:line 3: ")
    assert _count(engine) == before
    assert store.snapshot().flags("192.0.2.50", None) == set()
    assert store.snapshot().flags("192.0.2.10", None) == {"tor"}
    with pytest.raises(InputError, match="cannot read"):
        store.import_file(tmp_path / "absent.txt", "tor")
    assert _count(engine) == before
