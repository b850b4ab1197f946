"""Jurisdictions and the units that cover them.

A jurisdiction map is imported from a GeoJSON FeatureCollection (RFC 7946) whose features carry a
code and a name in properties the user names. An address is placed by its GeoIP coordinates
(point in polygon, shapely STRtree over prepared geometries) or, failing that, by the GeoIP
subdivision code (the most specific subdivision whose code equals a jurisdiction code). A feature
with `"geometry": null` is a code-only jurisdiction: only the subdivision code can place into it.

Units come from a CSV file `unit,name,jurisdictions` (codes separated by `;`); each jurisdiction
belongs to at most one unit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# No type stubs ship with shapely; types-shapely is not a dependency yet, so its names are Any here.
import shapely  # type: ignore[import-untyped]
from shapely.geometry import Point, shape  # type: ignore[import-untyped]
from shapely.geometry.base import BaseGeometry  # type: ignore[import-untyped]
from sqlalchemy import Connection, Engine, func, insert, select, update

from peerwatch.enrich.geoip import GeoFacts
from peerwatch.enrich.placement import JurisdictionMatch
from peerwatch.errors import InputError
from peerwatch.storage.database import writer
from peerwatch.storage.schema import (
    jurisdiction_maps,
    jurisdictions,
    unit_jurisdictions,
    unit_lists,
    units,
)

_POLYGONAL = ("Polygon", "MultiPolygon")
_UNIT_COLUMNS = ("unit", "name", "jurisdictions")
# Kilometres per degree (WGS 84 mean values): good to ~0.5 % for a local distance to a border.
_KM_PER_DEG_LAT = 110.574
_KM_PER_DEG_LON_EQUATOR = 111.320


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None


@dataclass(frozen=True, slots=True)
class ParsedJurisdiction:
    code: str
    name: str
    feature_index: int
    geometry: dict[str, Any] | None  # GeoJSON geometry, as in the file


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The geometry, repaired if invalid (self-intersections are common in exported files)."""
    if geom.is_valid:
        return geom
    fixed = shapely.make_valid(geom)
    polys = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in _POLYGONAL]
    return shapely.union_all(polys) if polys else fixed


def parse_geojson(
    path: Path, data: bytes, code_property: str, name_property: str
) -> list[ParsedJurisdiction]:
    src = str(path)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else None
        raise InputError(f"not JSON: {exc}", source=src, location=where) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise InputError("not a GeoJSON FeatureCollection", source=src, field="type")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise InputError("no features", source=src, field="features")
    out: list[ParsedJurisdiction] = []
    first_of: dict[str, int] = {}
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InputError("not a GeoJSON Feature", source=src, location=where, field="type")
        props = feature.get("properties")
        if not isinstance(props, dict):
            raise InputError("no properties", source=src, location=where, field="properties")
        code = props.get(code_property)
        if code is None or str(code).strip() == "":
            raise InputError(
                "missing code property", source=src, location=where, field=code_property
            )
        code = str(code).strip()
        name = props.get(name_property)
        if name is None or str(name).strip() == "":
            raise InputError(
                "missing name property", source=src, location=where, field=name_property
            )
        if code in first_of:
            raise InputError(
                f"code {code!r} already used by features[{first_of[code]}]",
                source=src,
                location=where,
                field=code_property,
            )
        first_of[code] = i
        geometry = feature.get("geometry")
        if geometry is not None:
            if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGONAL:
                kind = geometry.get("type") if isinstance(geometry, dict) else type(geometry)
                raise InputError(
                    f"geometry is {kind!r}; Polygon or MultiPolygon (or null) expected",
                    source=src,
                    location=where,
                    field="geometry",
                )
            try:
                geom = shape(geometry)
            except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
                raise InputError(
                    f"bad coordinates: {exc}", source=src, location=where, field="geometry"
                ) from None
            if geom.is_empty:
                raise InputError("empty geometry", source=src, location=where, field="geometry")
            minx, miny, maxx, maxy = geom.bounds
            if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
                raise InputError(
                    "coordinates are not longitude/latitude (WGS 84, RFC 7946 §4)",
                    source=src,
                    location=where,
                    field="geometry",
                )
        out.append(ParsedJurisdiction(code, str(name).strip(), i, geometry))
    return out


@dataclass(frozen=True, slots=True)
class ParsedUnit:
    code: str
    name: str
    line: int
    jurisdictions: tuple[str, ...]


def parse_units(path: Path, data: bytes, known: set[str]) -> list[ParsedUnit]:
    """CSV `unit,name,jurisdictions` with a header; codes in the last column split on `;`."""
    src = str(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=src) from None
    rows = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    out: list[ParsedUnit] = []
    unit_line: dict[str, int] = {}
    claimed: dict[str, tuple[str, int]] = {}
    for row in rows:
        number = rows.line_num
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in row]
        if header is None:
            header = [c.lower() for c in cells]
            if tuple(header) != _UNIT_COLUMNS:
                raise InputError(
                    f"header must be {','.join(_UNIT_COLUMNS)}, got {','.join(cells)}",
                    source=src,
                    location=f"line {number}",
                )
            continue
        where = f"line {number}"
        if len(cells) != 3:
            raise InputError(
                f"{len(cells)} columns, 3 expected (unit,name,jurisdictions)",
                source=src,
                location=where,
            )
        code, name, codes = cells
        if not code:
            raise InputError("empty unit code", source=src, location=where, field="unit")
        if not name:
            raise InputError("empty unit name", source=src, location=where, field="name")
        if code in unit_line:
            raise InputError(
                f"unit {code!r} already defined on line {unit_line[code]}",
                source=src,
                location=where,
                field="unit",
            )
        unit_line[code] = number
        mine: list[str] = []
        for j in (c.strip() for c in codes.split(";")):
            if not j:
                continue
            if j not in known:
                raise InputError(
                    f"unknown jurisdiction {j!r} (not in the imported jurisdiction map)",
                    source=src,
                    location=where,
                    field="jurisdictions",
                )
            if j in claimed:
                other, line = claimed[j]
                raise InputError(
                    f"jurisdiction {j!r} is already covered by unit {other!r} (line {line})",
                    source=src,
                    location=where,
                    field="jurisdictions",
                )
            claimed[j] = (code, number)
            mine.append(j)
        out.append(ParsedUnit(code, name, number, tuple(mine)))
    if header is None:
        raise InputError("empty file: header unit,name,jurisdictions expected", source=src)
    if not out:
        raise InputError("no units", source=src)
    return out


@dataclass(frozen=True, slots=True)
class MapInfo:
    version: int
    imported_ms: int
    source: str
    sha256: str
    code_property: str
    name_property: str
    country: str | None
    features: int

    @property
    def label(self) -> str:
        return f"jurisdictions v{self.version} ({Path(self.source).name})"


@dataclass(frozen=True, slots=True)
class JurisdictionImportResult:
    version: int
    features: int
    unchanged: bool
    uncovered: tuple[str, ...]  # codes no unit covers (when units exist)
    orphaned: tuple[str, ...]  # codes the active units claim that the new map lacks


@dataclass(frozen=True, slots=True)
class UnitImportResult:
    version: int
    units: int
    uncovered: tuple[str, ...]  # jurisdictions of the map that no unit covers
    unchanged: bool


@dataclass(frozen=True, slots=True)
class JurisdictionRow:
    code: str
    name: str
    has_geometry: bool
    unit: str | None


@dataclass(frozen=True, slots=True)
class UnitRow:
    code: str
    name: str
    jurisdictions: tuple[str, ...]


class JurisdictionStore:
    """The jurisdiction map and the units, in the database."""

    def __init__(self, engine: Engine, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.engine = engine
        self._clock_ms = clock_ms

    # -- jurisdictions --------------------------------------------------------------------------

    def import_geojson(
        self,
        path: Path,
        *,
        code_property: str,
        name_property: str,
        country: str | None = None,
    ) -> JurisdictionImportResult:
        if country is not None and (len(country) != 2 or not country.isalpha()):
            raise InputError(f"not an ISO 3166-1 alpha-2 code: {country!r}", field="country")
        country = country.upper() if country else None
        data = _read(path)
        parsed = parse_geojson(path, data, code_property, name_property)
        digest = hashlib.sha256(data).hexdigest()
        with writer(self.engine).begin() as conn:
            active = self._active_map(conn)
            unit_claims = set(self._unit_claims(conn))
            codes = {p.code for p in parsed}
            orphaned = tuple(sorted(unit_claims - codes))
            uncovered = tuple(sorted(codes - unit_claims)) if unit_claims else ()
            if active is not None and (
                active.sha256,
                active.code_property,
                active.name_property,
                active.country,
            ) == (digest, code_property, name_property, country):
                return JurisdictionImportResult(
                    active.version, active.features, True, uncovered, orphaned
                )
            last = conn.execute(select(func.max(jurisdiction_maps.c.version))).scalar()
            version = int(last or 0) + 1
            conn.execute(
                update(jurisdiction_maps).where(jurisdiction_maps.c.active).values(active=False)
            )
            map_id = conn.execute(
                insert(jurisdiction_maps)
                .values(
                    version=version,
                    imported_ms=self._clock_ms(),
                    source=str(path.resolve()),
                    sha256=digest,
                    code_property=code_property,
                    name_property=name_property,
                    country=country,
                    feature_count=len(parsed),
                    active=True,
                )
                .returning(jurisdiction_maps.c.id)
            ).scalar_one()
            conn.execute(
                insert(jurisdictions),
                [
                    {
                        "map_id": map_id,
                        "code": p.code,
                        "name": p.name,
                        "feature_index": p.feature_index,
                        "geometry": None if p.geometry is None else json.dumps(p.geometry),
                    }
                    for p in parsed
                ],
            )
        return JurisdictionImportResult(version, len(parsed), False, uncovered, orphaned)

    @staticmethod
    def _active_map(conn: Connection) -> MapInfo | None:
        r = conn.execute(select(jurisdiction_maps).where(jurisdiction_maps.c.active)).first()
        if r is None:
            return None
        return MapInfo(
            r.version,
            r.imported_ms,
            r.source,
            r.sha256,
            r.code_property,
            r.name_property,
            r.country,
            r.feature_count,
        )

    @staticmethod
    def _unit_claims(conn: Connection) -> dict[str, str]:
        rows = conn.execute(
            select(unit_jurisdictions.c.jurisdiction, unit_jurisdictions.c.unit_code)
            .join(unit_lists, unit_lists.c.id == unit_jurisdictions.c.list_id)
            .where(unit_lists.c.active)
        )
        return {j: u for j, u in rows}

    def active_map(self) -> MapInfo | None:
        with self.engine.connect() as conn:
            return self._active_map(conn)

    def list_jurisdictions(self) -> list[JurisdictionRow]:
        with self.engine.connect() as conn:
            claims = self._unit_claims(conn)
            rows = conn.execute(
                select(jurisdictions.c.code, jurisdictions.c.name, jurisdictions.c.geometry)
                .join(jurisdiction_maps, jurisdiction_maps.c.id == jurisdictions.c.map_id)
                .where(jurisdiction_maps.c.active)
                .order_by(jurisdictions.c.feature_index)
            ).all()
        return [JurisdictionRow(c, n, g is not None, claims.get(c)) for c, n, g in rows]

    def feature_collection(self) -> dict[str, Any]:
        """The active map as GeoJSON (properties code, name, unit), for the web app's map."""
        with self.engine.connect() as conn:
            claims = self._unit_claims(conn)
            rows = conn.execute(
                select(jurisdictions.c.code, jurisdictions.c.name, jurisdictions.c.geometry)
                .join(jurisdiction_maps, jurisdiction_maps.c.id == jurisdictions.c.map_id)
                .where(jurisdiction_maps.c.active)
                .order_by(jurisdictions.c.feature_index)
            ).all()
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"code": c, "name": n, "unit": claims.get(c)},
                    "geometry": None if g is None else json.loads(g),
                }
                for c, n, g in rows
            ],
        }

    # -- units ----------------------------------------------------------------------------------

    def import_units(self, path: Path) -> UnitImportResult:
        data = _read(path)
        digest = hashlib.sha256(data).hexdigest()
        with writer(self.engine).begin() as conn:
            active_map = self._active_map(conn)
            if active_map is None:
                raise InputError(
                    "no jurisdictions yet: run `peerwatch jurisdictions import` first",
                    source=str(path),
                )
            known = {
                c
                for (c,) in conn.execute(
                    select(jurisdictions.c.code)
                    .join(jurisdiction_maps, jurisdiction_maps.c.id == jurisdictions.c.map_id)
                    .where(jurisdiction_maps.c.active)
                )
            }
            parsed = parse_units(path, data, known)
            claimed = {j for u in parsed for j in u.jurisdictions}
            uncovered = tuple(sorted(known - claimed))
            active = conn.execute(
                select(unit_lists.c.version, unit_lists.c.sha256, unit_lists.c.map_version).where(
                    unit_lists.c.active
                )
            ).first()
            if active is not None and (active.sha256, active.map_version) == (
                digest,
                active_map.version,
            ):
                return UnitImportResult(active.version, len(parsed), uncovered, True)
            last = conn.execute(select(func.max(unit_lists.c.version))).scalar()
            version = int(last or 0) + 1
            conn.execute(update(unit_lists).where(unit_lists.c.active).values(active=False))
            list_id = conn.execute(
                insert(unit_lists)
                .values(
                    version=version,
                    imported_ms=self._clock_ms(),
                    source=str(path.resolve()),
                    sha256=digest,
                    map_version=active_map.version,
                    unit_count=len(parsed),
                    active=True,
                )
                .returning(unit_lists.c.id)
            ).scalar_one()
            conn.execute(
                insert(units),
                [
                    {"list_id": list_id, "code": u.code, "name": u.name, "line": u.line}
                    for u in parsed
                ],
            )
            pairs = [
                {"list_id": list_id, "unit_code": u.code, "jurisdiction": j}
                for u in parsed
                for j in u.jurisdictions
            ]
            if pairs:
                conn.execute(insert(unit_jurisdictions), pairs)
        return UnitImportResult(version, len(parsed), uncovered, False)

    def list_units(self) -> list[UnitRow]:
        with self.engine.connect() as conn:
            claims = self._unit_claims(conn)
            rows = conn.execute(
                select(units.c.code, units.c.name)
                .join(unit_lists, unit_lists.c.id == units.c.list_id)
                .where(unit_lists.c.active)
                .order_by(units.c.line)
            ).all()
        by_unit: dict[str, list[str]] = {}
        for j, u in claims.items():
            by_unit.setdefault(u, []).append(j)
        return [UnitRow(c, n, tuple(sorted(by_unit.get(c, [])))) for c, n in rows]

    def snapshot(self) -> JurisdictionMap | None:
        """The active map and units, loaded for lookups (None when no map was imported)."""
        with self.engine.connect() as conn:
            info = self._active_map(conn)
            if info is None:
                return None
            claims = self._unit_claims(conn)
            rows = conn.execute(
                select(jurisdictions.c.code, jurisdictions.c.name, jurisdictions.c.geometry)
                .join(jurisdiction_maps, jurisdiction_maps.c.id == jurisdictions.c.map_id)
                .where(jurisdiction_maps.c.active)
                .order_by(jurisdictions.c.feature_index)
            ).all()
        # One vectorised GEOS parse of all geometries (several times faster than shape()).
        shapes = shapely.from_geojson([g for _c, _n, g in rows if g is not None])
        it = iter(shapes)
        areas = [Area(c, n, None if g is None else _polygonal(next(it))) for c, n, g in rows]
        return JurisdictionMap(areas, claims, country=info.country, label=info.label)


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    name: str
    geometry: BaseGeometry | None


@dataclass
class JurisdictionMap:
    """Jurisdictions in memory: an STRtree over their polygons, plus codes for the fallback."""

    areas: list[Area]
    units: dict[str, str] = field(default_factory=dict)  # jurisdiction code -> unit code
    country: str | None = None  # limits the subdivision fallback to this GeoIP country
    label: str = "jurisdictions"

    def __post_init__(self) -> None:
        self._shaped = [a for a in self.areas if a.geometry is not None]
        geoms = [a.geometry for a in self._shaped]
        for g in geoms:
            shapely.prepare(g)
        self._tree = shapely.STRtree(geoms)
        self._by_code = {a.code: a for a in self.areas}

    def locate(
        self, latitude: float, longitude: float, accuracy_km: int | None = None
    ) -> JurisdictionMatch | None:
        """The jurisdiction whose polygon holds the point. "certain" only when the whole accuracy
        circle lies inside it (the border is farther than the accuracy radius)."""
        point = Point(longitude, latitude)
        hits = self._tree.query(point, predicate="intersects")
        if len(hits) == 0:
            return None
        # Touching two polygons means lying on their common border: the first in file order wins,
        # and the zero distance to the border makes the answer "uncertain".
        area = self._shaped[int(min(hits))]
        assert area.geometry is not None
        border = _border_km(area.geometry, latitude, longitude)
        sure = accuracy_km is not None and border > accuracy_km
        return JurisdictionMatch(
            code=area.code,
            name=area.name,
            method="polygon",
            confidence="certain" if sure else "uncertain",
            border_km=round(border, 1),
            unit=self.units.get(area.code),
            source=self.label,
        )

    def by_subdivision(
        self, country: str | None, subdivisions: tuple[str, ...]
    ) -> JurisdictionMatch | None:
        """The jurisdiction whose code equals the most specific GeoIP subdivision code (a code
        given as ISO 3166-2 "FR-75" also matches "75")."""
        if self.country is not None and country != self.country:
            return None
        for sub in reversed(subdivisions):
            candidates = [sub]
            if country and sub.upper().startswith(f"{country.upper()}-"):
                candidates.append(sub[len(country) + 1 :])
            for code in candidates:
                area = self._by_code.get(code)
                if area is not None:
                    return JurisdictionMatch(
                        code=area.code,
                        name=area.name,
                        method="subdivision",
                        confidence="uncertain",
                        border_km=None,
                        unit=self.units.get(area.code),
                        source=self.label,
                    )
        return None

    def place(self, geo: GeoFacts) -> JurisdictionMatch | None:
        if geo.has_local_position:
            assert geo.latitude is not None and geo.longitude is not None
            match = self.locate(geo.latitude, geo.longitude, geo.accuracy_km)
            if match is not None:
                return match
        return self.by_subdivision(geo.country, geo.subdivisions)


def _border_km(geom: BaseGeometry, latitude: float, longitude: float) -> float:
    """Distance from the point to the polygon's boundary, in km, in a local equirectangular
    projection centred on the point (accurate to well under 1 % within a few hundred km)."""
    kx = _KM_PER_DEG_LON_EQUATOR * math.cos(math.radians(latitude))
    ky = _KM_PER_DEG_LAT

    def project(coords: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.column_stack(((coords[:, 0] - longitude) * kx, (coords[:, 1] - latitude) * ky))

    boundary = shapely.transform(geom.boundary, project)
    return float(boundary.distance(Point(0.0, 0.0)))
