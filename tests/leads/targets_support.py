"""Shared by the target tests: a small evidence log and an enricher whose answers are chosen.

The enricher is the real `Enricher` over a stand-in GeoIP source and jurisdiction map, so the
placement logic under test is the product's; only the databases are replaced by a table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine

from peerwatch.enrich.geoip import GeoFacts
from peerwatch.enrich.placement import Enricher, JurisdictionMatch
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import Observation
from peerwatch.leads.targets import TargetStore
from peerwatch.watchlist.store import WatchlistStore

DAY = 86_400_000
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
SEED = 1_000_000  # completion of a complete copy, in ppm


class TableGeo:
    """GeoIP stand-in: network -> (département code or None, ASN or None)."""

    def __init__(self, table: Mapping[str, tuple[str | None, int | None]]) -> None:
        self._table = [(ipaddress.ip_network(n), v) for n, v in table.items()]

    def lookup(self, ip: str) -> GeoFacts:
        addr = ipaddress.ip_address(ip)
        for net, (dep, asn) in self._table:
            if addr.version == net.version and addr in net:
                return GeoFacts(country="FR", subdivisions=() if dep is None else (dep,), asn=asn)
        return GeoFacts()


class CodeMap:
    """Jurisdiction stand-in: the GeoIP subdivision code is the jurisdiction; unit U<code>."""

    def place(self, geo: GeoFacts) -> JurisdictionMatch | None:
        if not geo.subdivisions:
            return None
        code = geo.subdivisions[-1]
        return JurisdictionMatch(
            code=code,
            name=f"Département {code}",
            method="subdivision",
            confidence="uncertain",
            border_km=None,
            unit=f"U{code}",
            source="test map v1",
        )


def enricher(table: Mapping[str, tuple[str | None, int | None]]) -> Enricher:
    return Enricher(geo=TableGeo(table), jurisdictions=CodeMap())


def log(engine: Engine, keys: Path, sensor: str = "s1") -> EvidenceLog:
    return EvidenceLog(engine, load_or_create(keys, sensor), clock_ms=lambda: T0)


def store(engine: Engine, enr: Enricher) -> TargetStore:
    return TargetStore(
        engine, enr, WatchlistStore(engine, clock_ms=lambda: T0), clock_ms=lambda: T0
    )


def key(n: int) -> str:
    """A benign content key: not the hash of anything."""
    return f"btih:{n:040x}"


def probe(
    at: int,
    ip: str,
    port: int,
    client: str | None,
    content: int = 1,
    *,
    ppm: int = SEED,
    outcome: str = "possession",
    method: str = "bitfield",
    peer_id: str | None = None,
) -> Observation:
    return Observation(
        observed_ms=at,
        network="bittorrent",
        method=method,
        content_key=key(content),
        ip=ip,
        port=port,
        client=client,
        peer_id=peer_id,
        completion_ppm=ppm if outcome == "possession" else None,
        outcome=outcome,
        extra={"listen_port": port},
    )


def claim(at: int, ip: str, port: int, content: int = 1) -> Observation:
    return Observation(
        observed_ms=at,
        network="bittorrent",
        method="dht-get-peers",
        content_key=key(content),
        ip=ip,
        port=port,
        outcome="claim",
        extra={"source": "127.0.0.200:6881"},
    )
