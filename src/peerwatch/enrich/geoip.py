"""GeoIP: City and ASN lookups from MaxMind DB files (GeoIP2/GeoLite2, DB-IP lite), memory-mapped.

A location read from such a database is only true for the time the database was built, so every
answer carries the database's type and build date (metadata `build_epoch`, MaxMind DB spec
"Database Metadata").
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import maxminddb
from maxminddb.reader import Reader
from sqlalchemy import Engine, insert, select, update

from peerwatch.errors import InputError
from peerwatch.storage.database import writer
from peerwatch.storage.schema import geoip_databases

# database_type words that say what a file holds (MaxMind: GeoIP2-City, GeoLite2-City,
# GeoIP2-Country, GeoIP2-Enterprise, GeoLite2-ASN, GeoIP2-ISP; DB-IP: DBIP-City-Lite,
# DBIP-Country-Lite, DBIP-ASN-Lite, "DBIP-ASN-Lite (compat=GeoLite2-ASN)").
_CITY_WORDS = ("city", "country", "enterprise", "location")
_ASN_WORDS = ("asn", "isp")


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    role: str  # "city" or "asn"
    path: str
    database_type: str  # from the file's metadata, e.g. "GeoLite2-City"
    build_epoch: int  # seconds since 1970 (UTC), from the file's metadata
    ip_version: int  # 4 or 6

    @property
    def built(self) -> date:
        return datetime.fromtimestamp(self.build_epoch, UTC).date()

    @property
    def label(self) -> str:
        return f"{self.database_type} built {self.built.isoformat()}"


@dataclass(frozen=True, slots=True)
class GeoFacts:
    """What the GeoIP databases say about one address (all None when they say nothing)."""

    country: str | None = None  # ISO 3166-1 alpha-2, e.g. "FR"
    subdivisions: tuple[str, ...] = ()  # ISO 3166-2 codes without the country, most specific last
    city: str | None = None  # English name (or the first name given)
    latitude: float | None = None
    longitude: float | None = None
    accuracy_km: int | None = None  # the database's accuracy radius around latitude/longitude
    asn: int | None = None
    organisation: str | None = None
    city_database: DatabaseInfo | None = None  # the City database consulted, if any
    asn_database: DatabaseInfo | None = None  # the ASN database consulted, if any

    @property
    def sources(self) -> tuple[str, ...]:
        """ "GeoLite2-City built 2026-11-01", one per database consulted, for the record."""
        dbs = (self.city_database, self.asn_database)
        return tuple(db.label for db in dbs if db is not None)

    @property
    def has_local_position(self) -> bool:
        """True when the coordinates locate a city or subdivision, not merely a country (a
        country-only record carries the country's centroid, which must not pick a
        jurisdiction)."""
        return (
            self.latitude is not None
            and self.longitude is not None
            and (self.city is not None or bool(self.subdivisions))
        )


def _role_of(database_type: str) -> str | None:
    low = database_type.lower()
    if any(w in low for w in _ASN_WORDS):
        return "asn"
    if any(w in low for w in _CITY_WORDS):
        return "city"
    return None


def open_database(path: Path, role: str) -> tuple[Reader, DatabaseInfo]:
    """Open an MMDB file memory-mapped and check that it is a `role` ("city"/"asn") database."""
    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except FileNotFoundError:
        raise InputError("no such file", source=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    except (maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise InputError(f"not a MaxMind DB (.mmdb) file: {exc}", source=str(path)) from None
    meta = reader.metadata()
    database_type = str(meta.database_type)
    found = _role_of(database_type)
    if found != role:
        reader.close()
        want = "a City database (e.g. GeoLite2-City, DBIP-City-Lite)"
        if role == "asn":
            want = "an ASN database (e.g. GeoLite2-ASN, DBIP-ASN-Lite)"
        raise InputError(
            f"is a {database_type!r} database; {want} is needed here",
            source=str(path),
            field="database_type",
        )
    info = DatabaseInfo(
        role=role,
        path=str(path),
        database_type=database_type,
        build_epoch=int(meta.build_epoch),
        ip_version=int(meta.ip_version),
    )
    return reader, info


def _get(reader: Reader, ip: str) -> dict[str, Any] | None:
    try:
        record = reader.get(ip)
    except ValueError:  # an IPv6 address in an IPv4-only database
        return None
    return record if isinstance(record, dict) else None


def _name(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    names = node.get("names")
    if not isinstance(names, dict) or not names:
        return None
    value = names.get("en") or next(iter(names.values()))
    return str(value) if value else None


def _str(node: Any, key: str) -> str | None:
    if isinstance(node, dict) and node.get(key) is not None:
        return str(node[key])
    return None


def lookup_key(ip: str) -> str:
    """The address as the databases index it: IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4,
    because not every writer aliases ::ffff:0:0/96 to the IPv4 tree as MaxMind's own files do."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise InputError(f"not an IP address: {ip!r}", field="ip") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class GeoIP:
    """Readers over a City and/or an ASN database; either may be absent."""

    def __init__(self, city: Path | None = None, asn: Path | None = None) -> None:
        self._city: Reader | None = None
        self._asn: Reader | None = None
        self.city_database: DatabaseInfo | None = None
        self.asn_database: DatabaseInfo | None = None
        if city is not None:
            self._city, self.city_database = open_database(city, "city")
        if asn is not None:
            try:
                self._asn, self.asn_database = open_database(asn, "asn")
            except InputError:
                self.close()
                raise

    @property
    def databases(self) -> tuple[DatabaseInfo, ...]:
        return tuple(d for d in (self.city_database, self.asn_database) if d is not None)

    def lookup(self, ip: str) -> GeoFacts:
        key = lookup_key(ip)
        country = city = organisation = None
        subdivisions: tuple[str, ...] = ()
        latitude = longitude = None
        accuracy: int | None = None
        asn: int | None = None
        if self._city is not None:
            rec = _get(self._city, key) or {}
            country = _str(rec.get("country"), "iso_code")
            subs = rec.get("subdivisions")
            if isinstance(subs, list):
                subdivisions = tuple(
                    str(s["iso_code"]) for s in subs if isinstance(s, dict) and s.get("iso_code")
                )
            city = _name(rec.get("city"))
            loc = rec.get("location")
            if isinstance(loc, dict):
                if loc.get("latitude") is not None and loc.get("longitude") is not None:
                    latitude = float(loc["latitude"])
                    longitude = float(loc["longitude"])
                if loc.get("accuracy_radius") is not None:
                    accuracy = int(loc["accuracy_radius"])
            # GeoIP2 Enterprise/Insights put the network owner under traits.
            traits = rec.get("traits")
            if isinstance(traits, dict) and traits.get("autonomous_system_number") is not None:
                asn = int(traits["autonomous_system_number"])
                organisation = _str(traits, "autonomous_system_organization")
        if self._asn is not None:
            rec = _get(self._asn, key) or {}
            if rec.get("autonomous_system_number") is not None:
                asn = int(rec["autonomous_system_number"])
                organisation = _str(rec, "autonomous_system_organization") or _str(
                    rec, "organization"
                )
        return GeoFacts(
            country=country,
            subdivisions=subdivisions,
            city=city,
            latitude=latitude,
            longitude=longitude,
            accuracy_km=accuracy,
            asn=asn,
            organisation=organisation,
            city_database=self.city_database,
            asn_database=self.asn_database,
        )

    def close(self) -> None:
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()
        self._city = self._asn = None


@dataclass(frozen=True, slots=True)
class ConfiguredDatabase:
    """A database set with `peerwatch geoip set`, as recorded then."""

    info: DatabaseInfo
    sha256: str  # of the file when it was set
    size: int
    configured_ms: int


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    return h.hexdigest(), size


class GeoIPConfig:
    """Which GeoIP databases to use, kept in the database (table geoip_databases) so that every
    command, sensor and the web app sharing the database use the same files, and so that the
    history of files used is on record."""

    def __init__(self, engine: Engine, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.engine = engine
        self._clock_ms = clock_ms

    def set(self, *, city: Path | None = None, asn: Path | None = None) -> list[ConfiguredDatabase]:
        """Check the files (both before writing anything), then make them the active ones."""
        chosen = [
            (role, p.expanduser().resolve()) for role, p in (("city", city), ("asn", asn)) if p
        ]
        if not chosen:
            raise InputError("give --city FILE and/or --asn FILE")
        checked: list[tuple[DatabaseInfo, str, int]] = []
        for role, path in chosen:
            reader, info = open_database(path, role)
            reader.close()
            digest, size = _file_sha256(path)
            checked.append((info, digest, size))
        now = self._clock_ms()
        with writer(self.engine).begin() as conn:
            for info, digest, size in checked:
                conn.execute(
                    update(geoip_databases)
                    .where(geoip_databases.c.role == info.role, geoip_databases.c.active)
                    .values(active=False)
                )
                conn.execute(
                    insert(geoip_databases).values(
                        role=info.role,
                        path=info.path,
                        database_type=info.database_type,
                        build_epoch=info.build_epoch,
                        ip_version=info.ip_version,
                        sha256=digest,
                        size=size,
                        configured_ms=now,
                        active=True,
                    )
                )
        return [ConfiguredDatabase(info, digest, size, now) for info, digest, size in checked]

    def active(self) -> dict[str, ConfiguredDatabase]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(geoip_databases).where(geoip_databases.c.active)).all()
        return {
            r.role: ConfiguredDatabase(
                DatabaseInfo(r.role, r.path, r.database_type, r.build_epoch, r.ip_version),
                r.sha256,
                r.size,
                r.configured_ms,
            )
            for r in rows
        }
