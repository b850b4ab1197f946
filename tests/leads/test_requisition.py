"""Requisition lines: one per (ip, port, second), possession first, CGNAT without port warned."""

from __future__ import annotations

import csv
import io

from peerwatch.leads.requisition import (
    CGNAT_NO_PORT,
    CSV_COLUMNS,
    NO_NETWORK,
    basis_of,
    lines_csv,
    requisition_lines,
)
from tests.leads.doubles import T0, Obs, placement

HOME = placement("192.0.2.10")
CGNAT = placement("100.64.3.7", flags=frozenset({"cgnat"}), organisation="Mobile Example")


def test_one_line_per_ip_port_second_possession_first() -> None:
    obs = [
        # Two observations in the same second (ms differ) -> one line counting both.
        Obs("s1", 1, T0 + 120, "192.0.2.10", 51413, method="dht-get-peers", outcome="claim"),
        Obs("s1", 2, T0 + 980, "192.0.2.10", 51413, placement=HOME),
        # Next second, same address: its own line.
        Obs("s1", 3, T0 + 1001, "192.0.2.10", 51413, method="have-all", placement=HOME),
        # A claim only, earlier than everything: still listed after the possession lines.
        Obs(
            "s2",
            7,
            T0 - 60_000,
            "198.51.100.4",
            6881,
            method="tracker-announce",
            outcome="claim",
            placement=placement("198.51.100.4", asn=64501, organisation="Other ISP"),
        ),
        # Results that support no requisition.
        Obs("s1", 4, T0 + 5000, "203.0.113.9", 6881, method="connect", outcome="refused"),
        Obs("s1", 5, T0 + 6000, "203.0.113.9", 6881, method="handshake", outcome="no-pieces"),
    ]
    lines = requisition_lines(obs)
    assert [(ln.ip, ln.port, ln.time, ln.basis, ln.observations) for ln in lines] == [
        ("192.0.2.10", 51413, "2025-11-24T16:00:00Z", "possession", 2),
        ("192.0.2.10", 51413, "2025-11-24T16:00:01Z", "possession", 1),
        ("198.51.100.4", 6881, "2025-11-24T15:59:00Z", "claim", 1),
    ]
    first = lines[0]
    # The line cites the possession observation of that second, not the claim.
    assert (first.evidence, first.method, first.asn, first.organisation) == (
        "s1/2",
        "bitfield",
        64500,
        "Example Telecom",
    )
    assert first.warnings == ()
    assert lines[2].asn == 64501 and lines[2].evidence == "s2/7"


def test_cgnat_without_port_is_warned_with_port_is_not() -> None:
    lines = requisition_lines(
        [
            Obs("s1", 1, T0, "100.64.3.7", None, method="pex", outcome="claim", placement=CGNAT),
            Obs("s1", 2, T0 + 3000, "100.64.3.7", 40000, placement=CGNAT),
            Obs(
                "s1",
                3,
                T0 + 9000,
                "192.0.2.99",
                None,
                method="dht-get-peers",
                outcome="claim",
                placement=placement("192.0.2.99", flags=frozenset({"mobile"})),
            ),
            Obs("s1", 4, T0 + 10_000, "192.0.2.10", None, outcome="claim", method="pex"),
        ]
    )
    by_ip = {(ln.ip, ln.port): ln for ln in lines}
    assert by_ip[("100.64.3.7", 40000)].warnings == ()
    assert by_ip[("100.64.3.7", 40000)].flags == ("cgnat",)
    assert by_ip[("100.64.3.7", None)].warnings == (CGNAT_NO_PORT,)
    assert by_ip[("192.0.2.99", None)].warnings == (CGNAT_NO_PORT,)
    # A plain address without placement: no CGNAT warning, but the missing ASN is said.
    assert by_ip[("192.0.2.10", None)].warnings == (NO_NETWORK,)


def test_basis_of_methods_without_outcome() -> None:
    assert basis_of(Obs("s", 1, T0, "192.0.2.1", 1, method="piece-verified", outcome=None)) == (
        "possession"
    )
    assert basis_of(Obs("s", 1, T0, "192.0.2.1", 1, method="pex", outcome=None)) == "claim"
    assert basis_of(Obs("s", 1, T0, "192.0.2.1", 1, method="connect", outcome="timeout")) is None


def test_csv_has_header_and_empty_fields_for_unknowns() -> None:
    lines = requisition_lines(
        [Obs("s1", 1, T0, "100.64.3.7", None, method="pex", outcome="claim", placement=CGNAT)]
    )
    text = lines_csv([((12,), lines[0])], prefix=("target_id",))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["target_id", *CSV_COLUMNS]
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["target_id"] == "12" and record["port"] == ""
    assert record["time_utc"] == "2025-11-24T16:00:00Z" and record["flags"] == "cgnat"
    assert record["warnings"] == CGNAT_NO_PORT
    assert lines_csv([], prefix=("target_id",)).splitlines() == [",".join(rows[0])]
