"""Small GeoIP databases for the lab, the demo and the tests: City + ASN .mmdb files that place
chosen addresses (loopback 127.x included) in chosen French départements.

The files use MaxMind's record layouts (GeoIP2/GeoLite2 City and ASN: `country.iso_code`,
`subdivisions[].iso_code`, `city.names.en`, `location.latitude/longitude/accuracy_radius`,
`autonomous_system_number/organization`) and are written with mmdb-writer, so the real reader
(`maxminddb`) reads them as it reads MaxMind's files. Nothing in them is real data: coordinates are
the pole of inaccessibility of the département's polygon (the point farthest from its border),
and the networks and AS numbers are whatever the caller gives (documentation ASNs by default).

Notes on the format, learned building these:
- MaxMind's own writer leaves reserved networks (127/8, RFC 1918, ...) out unless told otherwise;
  mmdb-writer has no such filter, so loopback addresses can be inserted directly.
- In an IPv6 database (like GeoLite2) mmdb-writer stores IPv4 networks at ::a.b.c.d/96+n and
  does not alias ::ffff:0:0/96 as MaxMind's files do; `peerwatch.enrich.geoip` therefore looks
  IPv4-mapped IPv6 addresses up as IPv4.
- mmdb-writer stamps `build_epoch` with the current time; `_Writer` stamps the date asked for, so
  tests can check that a placement records its database's build date.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbU16, MmdbU32, MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]  # no stubs published

# No type stubs ship with shapely (see peerwatch.enrich.jurisdictions).
from shapely.geometry import shape  # type: ignore[import-untyped]
from shapely.ops import polylabel  # type: ignore[import-untyped]

from peerwatch.errors import InputError

DEFAULT_BUILT = date(2026, 11, 1)
# RFC 5398 reserves AS 64496-64511 for documentation.
DEFAULT_ASN = 64500

# ISO 3166-2:FR regions (since 2016) and their départements: MaxMind gives French addresses two
# subdivisions, region then département, most specific last.
_REGIONS: dict[str, tuple[str, ...]] = {
    "ARA": ("01", "03", "07", "15", "26", "38", "42", "43", "63", "69", "73", "74"),
    "BFC": ("21", "25", "39", "58", "70", "71", "89", "90"),
    "BRE": ("22", "29", "35", "56"),
    "CVL": ("18", "28", "36", "37", "41", "45"),
    "COR": ("2A", "2B"),
    "GES": ("08", "10", "51", "52", "54", "55", "57", "67", "68", "88"),
    "HDF": ("02", "59", "60", "62", "80"),
    "IDF": ("75", "77", "78", "91", "92", "93", "94", "95"),
    "NOR": ("14", "27", "50", "61", "76"),
    "NAQ": ("16", "17", "19", "23", "24", "33", "40", "47", "64", "79", "86", "87"),
    "OCC": ("09", "11", "12", "30", "31", "32", "34", "46", "48", "65", "66", "81", "82"),
    "PDL": ("44", "49", "53", "72", "85"),
    "PAC": ("04", "05", "06", "13", "83", "84"),
}
_REGION_OF = {d: r for r, ds in _REGIONS.items() for d in ds}
# Overseas départements have their own ISO 3166-1 country codes, which GeoIP databases report.
_OVERSEAS = {"971": "GP", "972": "MQ", "973": "GF", "974": "RE", "976": "YT"}
_CONTINENT = {"GP": "NA", "MQ": "NA", "GF": "SA", "RE": "AF", "YT": "AF"}


@dataclass(frozen=True, slots=True)
class Placed:
    """One address (or network) and where the test databases put it."""

    network: str  # "127.0.0.2", "2001:db8::7", "203.0.113.0/24"
    departement: str | None  # code in the boundaries file, e.g. "75", "971"; None: country only
    asn: int | None = DEFAULT_ASN
    organisation: str | None = "Lab Network"
    city: str | None = None  # default: the département's name
    accuracy_km: int = 1
    country: str = "FR"  # used when departement is None (or to override)
    latitude: float | None = None  # default: inside the département (pole of inaccessibility)
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class LabGeoIP:
    city: Path
    asn: Path
    built: date
    # Where each network was placed: (latitude, longitude), or None for no coordinates.
    points: dict[str, tuple[float, float] | None]


class _Writer(MMDBWriter):
    """An mmdb-writer that stamps a chosen build date instead of now."""

    def __init__(self, build_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = self._build_epoch
        return meta


def departement_points(boundaries: Path) -> dict[str, tuple[str, float, float]]:
    """code -> (name, latitude, longitude) of the point farthest from the border of the
    département's largest polygon."""
    try:
        doc = json.loads(boundaries.read_bytes())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read GeoJSON: {exc}", source=str(boundaries)) from None
    out: dict[str, tuple[str, float, float]] = {}
    for feature in doc["features"]:
        props = feature["properties"]
        geom = shape(feature["geometry"])
        largest = max(getattr(geom, "geoms", [geom]), key=lambda p: p.area)
        point = polylabel(largest, tolerance=0.0005)
        out[str(props["code"])] = (str(props["nom"]), float(point.y), float(point.x))
    return out


def build_geoip(
    folder: Path,
    placed: Sequence[Placed],
    *,
    boundaries: Path,
    built: date = DEFAULT_BUILT,
    edition: str = "GeoLite2",
) -> LabGeoIP:
    """Write `{edition}-City.mmdb` and `{edition}-ASN.mmdb` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    points = departement_points(boundaries)
    epoch = int(datetime.combine(built, time(0, 0), UTC).timestamp())
    common: dict[str, Any] = {
        "ip_version": 6,
        "ipv4_compatible": True,
        "languages": ["en"],
        "description": {"en": "peerwatch lab GeoIP: test data, not real locations"},
    }
    city_db = _Writer(epoch, database_type=f"{edition}-City", **common)
    asn_db = _Writer(epoch, database_type=f"{edition}-ASN", **common)
    where: dict[str, tuple[float, float] | None] = {}
    for p in placed:
        net = IPSet([str(ipaddress.ip_network(p.network, strict=False))])
        record = _city_record(p, points)
        loc = record.get("location")
        where[p.network] = (
            (loc["latitude"], loc["longitude"])
            if isinstance(loc, dict) and "latitude" in loc
            else None
        )
        city_db.insert_network(net, record)
        if p.asn is not None:
            asn_rec: dict[str, Any] = {"autonomous_system_number": MmdbU32(p.asn)}
            if p.organisation:
                asn_rec["autonomous_system_organization"] = p.organisation
            asn_db.insert_network(net, asn_rec)
    city_path = folder / f"{edition}-City.mmdb"
    asn_path = folder / f"{edition}-ASN.mmdb"
    city_db.to_db_file(str(city_path))
    asn_db.to_db_file(str(asn_path))
    return LabGeoIP(city_path, asn_path, built, where)


def _names(name: str) -> dict[str, str]:
    return {"en": name}


def _city_record(p: Placed, points: dict[str, tuple[str, float, float]]) -> dict[str, Any]:
    country = p.country
    subdivisions: list[dict[str, Any]] = []
    city = p.city
    lat, lon = p.latitude, p.longitude
    if p.departement is not None:
        if p.departement not in points:
            raise InputError(f"unknown département {p.departement!r}", field="departement")
        name, plat, plon = points[p.departement]
        city = city or name
        if lat is None or lon is None:
            lat, lon = plat, plon
        if p.departement in _OVERSEAS:
            country = _OVERSEAS[p.departement]
        else:
            region = _REGION_OF.get(p.departement)
            if region is not None:
                subdivisions.append({"iso_code": region, "names": _names(region)})
            subdivisions.append({"iso_code": p.departement, "names": _names(name)})
    continent = _CONTINENT.get(country, "EU")
    record: dict[str, Any] = {
        "continent": {"code": continent},
        "country": {"iso_code": country, "names": _names(country)},
        "registered_country": {"iso_code": country, "names": _names(country)},
    }
    if subdivisions:
        record["subdivisions"] = subdivisions
    if city:
        record["city"] = {"names": _names(city)}
    if lat is not None and lon is not None:
        record["location"] = {
            "latitude": float(lat),
            "longitude": float(lon),
            "accuracy_radius": MmdbU16(p.accuracy_km),
            "time_zone": "Europe/Paris" if country == "FR" else "UTC",
        }
    return record
