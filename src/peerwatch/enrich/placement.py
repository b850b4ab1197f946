"""Where an IP address is and whose case it is: the one answer the leads consume.

`Enricher.place(ip)` combines the GeoIP databases (`geoip`), the network flag lists (`netflags`)
and the jurisdiction map with its units (`jurisdictions`). Each part is optional: with nothing
configured every field is None and the only flag is the built-in CGNAT space (RFC 6598), so leads
can be built before anyone has imported a database. docs/enrichment.md describes it all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Protocol

from peerwatch.enrich.geoip import DatabaseInfo, GeoFacts, lookup_key

__all__ = [
    "FLAGS",
    "DatabaseInfo",
    "Enricher",
    "GeoFacts",
    "JurisdictionMatch",
    "Placement",
    "builtin_flags",
]

FLAGS = ("tor", "vpn", "hosting", "cgnat", "mobile")


@dataclass(frozen=True, slots=True)
class JurisdictionMatch:
    """Which jurisdiction an address falls in, how that was decided and how sure it is."""

    code: str
    name: str
    method: str  # "polygon" (lat/lon inside its boundary) or "subdivision" (GeoIP code equals it)
    # "certain": the whole accuracy circle lies inside the polygon; "uncertain": a border is within
    # the accuracy radius, or the database gives no radius, or the placement is by subdivision code.
    confidence: str
    border_km: float | None  # distance from the point to the jurisdiction's border (polygon only)
    unit: str | None  # the unit that covers this jurisdiction, if units were imported
    source: str  # "jurisdictions v3 (departements.geojson)", for the record


class GeoSource(Protocol):
    def lookup(self, ip: str) -> GeoFacts: ...


class FlagSource(Protocol):
    def flags(self, ip: str, asn: int | None) -> frozenset[str]: ...

    def sources(self) -> tuple[str, ...]: ...


class JurisdictionSource(Protocol):
    def place(self, geo: GeoFacts) -> JurisdictionMatch | None: ...


@dataclass(frozen=True, slots=True)
class Placement:
    ip: str
    country: str | None
    subdivisions: tuple[str, ...]
    city: str | None
    latitude: float | None
    longitude: float | None
    accuracy_km: int | None
    asn: int | None
    organisation: str | None
    flags: frozenset[str]  # "tor", "vpn", "hosting", "cgnat", "mobile"
    jurisdiction: str | None  # code, e.g. "75", "971"
    jurisdiction_name: str | None
    jurisdiction_method: str | None  # "polygon" | "subdivision" | None
    unit: str | None
    sources: tuple[str, ...]  # e.g. "GeoLite2-City built 2026-11-01", for the record
    # "certain" | "uncertain" | None (see JurisdictionMatch.confidence)
    jurisdiction_confidence: str | None = None
    border_km: float | None = None  # distance to the jurisdiction's border, polygon method only

    def caveats(self, *, source_port: int | None = None) -> tuple[str, ...]:
        """Sentences a lead must carry so that nobody over-reads this placement."""
        out: list[str] = []
        if "cgnat" in self.flags and source_port is None:
            out.append(
                "Carrier-grade NAT: many subscribers share this address; without the source "
                "port and exact time the provider cannot identify one subscriber."
            )
        elif "cgnat" in self.flags:
            out.append(
                "Carrier-grade NAT: the provider needs the source port and the exact time "
                "(UTC, to the second) to identify the subscriber."
            )
        if "mobile" in self.flags:
            out.append("Mobile network: addresses are short-lived and often behind NAT.")
        if "tor" in self.flags:
            out.append("Tor exit node: the address belongs to a relay, not to the user.")
        if "vpn" in self.flags:
            out.append("VPN provider: the address belongs to the provider, not to the user.")
        if "hosting" in self.flags:
            out.append("Hosting provider: likely a server, seedbox or proxy, not a home.")
        if self.jurisdiction is None:
            out.append("No jurisdiction could be determined for this address.")
        elif self.jurisdiction_confidence == "uncertain":
            if self.jurisdiction_method == "subdivision":
                out.append(
                    "Jurisdiction taken from the GeoIP subdivision code, not from coordinates."
                )
            else:
                out.append(
                    "A jurisdiction border lies within the GeoIP accuracy radius: "
                    "the neighbouring jurisdiction is possible."
                )
        if self.accuracy_km is not None and self.accuracy_km >= 100:
            out.append(f"GeoIP accuracy radius is {self.accuracy_km} km.")
        return tuple(out)

    def as_record(self) -> dict[str, object]:
        """A JSON-ready dict (flags sorted, tuples as lists) to store with a lead."""
        d = asdict(self)
        d["flags"] = sorted(self.flags)
        d["subdivisions"] = list(self.subdivisions)
        d["sources"] = list(self.sources)
        return d


@dataclass
class Enricher:
    """Places IP addresses; results are cached per address for the life of the object (the app
    builds a new one per process, so a `geoip set` or an import is seen by the next command)."""

    geo: GeoSource | None = None
    netflags: FlagSource | None = None
    jurisdictions: JurisdictionSource | None = None
    _cache: dict[str, Placement] = field(default_factory=dict, repr=False)

    def place(self, ip: str) -> Placement:
        key = _canonical_ip(ip)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        geo = self.geo.lookup(key) if self.geo is not None else GeoFacts()
        flags = (
            self.netflags.flags(key, geo.asn) if self.netflags is not None else builtin_flags(key)
        )
        match = self.jurisdictions.place(geo) if self.jurisdictions is not None else None
        sources = list(geo.sources)
        if self.netflags is not None:
            sources.extend(self.netflags.sources())
        if match is not None:
            sources.append(match.source)
        placement = Placement(
            ip=key,
            country=geo.country,
            subdivisions=geo.subdivisions,
            city=geo.city,
            latitude=geo.latitude,
            longitude=geo.longitude,
            accuracy_km=geo.accuracy_km,
            asn=geo.asn,
            organisation=geo.organisation,
            flags=flags,
            jurisdiction=match.code if match else None,
            jurisdiction_name=match.name if match else None,
            jurisdiction_method=match.method if match else None,
            unit=match.unit if match else None,
            sources=tuple(sources),
            jurisdiction_confidence=match.confidence if match else None,
            border_km=match.border_km if match else None,
        )
        self._cache[key] = placement
        return placement


# RFC 6598 §7: 100.64.0.0/10 is Shared Address Space for carrier-grade NAT. An observation from it
# can only come from inside a provider's network, but the flag is set wherever it is seen.
CGNAT_SPACE = ipaddress.ip_network("100.64.0.0/10")


def builtin_flags(ip: str) -> frozenset[str]:
    """Flags known without any imported list."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address) and addr in CGNAT_SPACE:
        return frozenset({"cgnat"})
    return frozenset()


def _canonical_ip(ip: str) -> str:
    return lookup_key(ip)
