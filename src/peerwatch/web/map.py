"""The map: jurisdictions coloured by their open leads within the reader's scope, or the targets'
points when no jurisdiction map is configured (docs/webapp.md, "Map").

Server-rendered inline SVG, no script and no tiles: nothing loads from anywhere (CSP default-src
'self'). The counts are computed by the database with the scope and the lead state in the query,
from the very clauses the leads list uses (`peerwatch.leads.targets.target_filter`: routed to a
unit of the scope or held by one, lead not closed), so a jurisdiction's number is the length of
the list its link opens (`/leads?jurisdiction=XX`, open leads by default) and an investigator's map
never counts another unit's targets: jurisdictions outside the scope are grey and carry no number
(unless the reader's unit holds a lead there). A row outside the scope coming back anyway fails
the request closed (500, nothing shown).

Projection: equirectangular with the longitude scaled by cos(mean latitude) of each panel. The
largest group of neighbouring jurisdictions is the main panel; every jurisdiction far from it
(overseas départements, islands) gets a small panel of its own, as French maps usually do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

# No type stubs ship with shapely (as in enrich/jurisdictions.py): its names are Any here.
import shapely  # type: ignore[import-untyped]
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from pydantic import BaseModel, Field
from shapely.geometry import shape  # type: ignore[import-untyped]
from shapely.geometry.base import BaseGeometry  # type: ignore[import-untyped]
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts.role import Permission, Scope
from peerwatch.leads.targets import OPEN_STATE, target_filter
from peerwatch.storage.schema import lead_states, targets
from peerwatch.web.auth import Identity, requires
from peerwatch.web.pages import render
from peerwatch.web.scoped_targets import Actor, ScopeViolationError

if TYPE_CHECKING:
    from peerwatch.app import App

pages_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api_router = APIRouter(prefix="/api/v1", tags=["map"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission."},
}

MAIN_SIZE = 560.0  # the main panel's larger side, in SVG units
INSET_SIZE = 110.0  # each small panel's larger side
GAP = 12.0
NEAR_DEGREES = 1.0  # jurisdictions whose boxes come this close belong to one panel
SIMPLIFY_PIXELS = 0.6  # geometry is simplified to about this many SVG units
MAX_POINTS = 5_000  # targets plotted in points mode (highest id first beyond that: see docs)
OUT_OF_SCOPE = "#d4d4d4"
# Sequential palette (ColorBrewer OrRd 6), lightest for zero open leads.
PALETTE = ("#fef0d9", "#fdd49e", "#fdbb84", "#fc8d59", "#e34a33", "#b30000")
_BREAKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000)


# --- the scoped data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JurisdictionCount:
    code: str
    name: str
    unit: str | None
    in_scope: bool
    open_leads: int | None  # None outside the scope (never counted)
    geometry: dict[str, Any] | None


@dataclass(frozen=True)
class TargetPoint:
    target_id: int
    label: str
    latitude: float
    longitude: float
    jurisdiction: str | None
    unit: str | None
    state: str


@dataclass(frozen=True)
class MapData:
    mode: str  # "jurisdictions" or "points"
    map_label: str | None
    jurisdictions: list[JurisdictionCount]
    points: list[TargetPoint]
    open_leads: int  # in the scope, all jurisdictions together (and none)
    without_jurisdiction: int  # open leads in the scope placed in no jurisdiction of the map
    not_plotted: int  # points mode: open leads in the scope without a GeoIP position


class ScopedMap:
    """Counts and points of open leads, always within the reader's scope."""

    def __init__(self, app: App) -> None:
        self._app = app

    def _query_open(self, scope: Scope, *columns: Any) -> Any:
        t = targets.c
        return (
            select(*columns)
            .select_from(targets.outerjoin(lead_states, lead_states.c.target_id == t.id))
            .where(*target_filter(units=scope.units, state=OPEN_STATE))
        )

    def build(self, actor: Actor) -> MapData:
        scope = actor.principal.scope
        jur = self._app.jurisdictions
        info = jur.active_map()
        has_geometry = info is not None and any(j.has_geometry for j in jur.list_jurisdictions())
        if has_geometry:
            data = self._jurisdictions(scope, info.label if info else None)
        else:
            data = self._points(scope)
        actor.audit(
            self._app.audit,
            "map.view",
            None,
            {
                "mode": data.mode,
                "open_leads": data.open_leads,
                "targets": [p.target_id for p in data.points],
            },
        )
        return data

    def _jurisdictions(self, scope: Scope, label: str | None) -> MapData:
        t = targets.c
        counts: dict[str | None, int] = {}
        if scope.units is None or scope.units:  # an empty scope reads nothing
            holder = lead_states.c.unit
            query = self._query_open(scope, t.jurisdiction, t.unit, holder, func.count()).group_by(
                t.jurisdiction, t.unit, holder
            )
            with self._app.engine.connect() as conn:
                for code, unit, held_by, n in conn.execute(query):
                    if not _visible(scope, unit, held_by):
                        raise ScopeViolationError("the map query returned another unit's count")
                    counts[code] = counts.get(code, 0) + int(n)
        features = self._app.jurisdictions.feature_collection()["features"]
        rows = []
        for f in features:
            props = f["properties"]
            code, unit = str(props["code"]), props.get("unit")
            in_scope = scope.allows(unit) or code in counts
            rows.append(
                JurisdictionCount(
                    code=code,
                    name=str(props.get("name") or code),
                    unit=unit,
                    in_scope=in_scope,
                    open_leads=counts.get(code, 0) if in_scope else None,
                    geometry=f.get("geometry"),
                )
            )
        known = {r.code for r in rows}
        elsewhere = sum(n for code, n in counts.items() if code not in known)
        return MapData(
            mode="jurisdictions",
            map_label=label,
            jurisdictions=rows,
            points=[],
            open_leads=sum(counts.values()),
            without_jurisdiction=elsewhere,
            not_plotted=0,
        )

    def _points(self, scope: Scope) -> MapData:
        t = targets.c
        rows: list[Any] = []
        if scope.units is None or scope.units:
            query = self._query_open(
                scope,
                t.id,
                t.place_ip,
                t.jurisdiction,
                t.unit,
                lead_states.c.state,
                lead_states.c.unit,
            ).order_by(t.id)
            with self._app.engine.connect() as conn:
                rows = list(conn.execute(query))
        points: list[TargetPoint] = []
        missing = 0
        enricher = self._app.enricher
        for tid, ip, code, unit, state, held_by in rows:
            if not _visible(scope, unit, held_by):
                raise ScopeViolationError("the map query returned another unit's target")
            place = None if ip is None else enricher.place(ip)
            if place is None or place.latitude is None or place.longitude is None:
                missing += 1
                continue
            points.append(
                TargetPoint(
                    target_id=int(tid),
                    label=f"T-{int(tid):06d}",
                    latitude=float(place.latitude),
                    longitude=float(place.longitude),
                    jurisdiction=code,
                    unit=unit,
                    state=state or "new",
                )
            )
        shown = points[-MAX_POINTS:]
        return MapData(
            mode="points",
            map_label=None,
            jurisdictions=[],
            points=shown,
            open_leads=len(rows),
            without_jurisdiction=sum(1 for r in rows if r[2] is None),
            not_plotted=missing + len(points) - len(shown),
        )


def _visible(scope: Scope, unit: str | None, holder: str | None) -> bool:
    """`scoped_targets.visible` on the columns of a row: routed to the scope or held by it."""
    return scope.allows(unit) or (holder is not None and scope.allows(holder))


# --- drawing ------------------------------------------------------------------------------------


def breaks_for(maximum: int) -> list[tuple[int, int | None]]:
    """Classes of counts for the legend: (0, 0), then ranges up to `maximum`, at most 5."""
    classes: list[tuple[int, int | None]] = [(0, 0)]
    bounds = [b for b in _BREAKS if b <= max(maximum, 1)]
    bounds = bounds[-5:] if len(bounds) > 5 else bounds
    if bounds[0] != 1:
        bounds[0] = 1
    for i, low in enumerate(bounds):
        high = bounds[i + 1] - 1 if i + 1 < len(bounds) else None
        classes.append((low, high))
    return classes


def colour_of(count: int, classes: Sequence[tuple[int, int | None]]) -> str:
    for i, (low, high) in reversed(list(enumerate(classes))):
        if count >= low and (high is None or count <= high):
            return PALETTE[i]
    return PALETTE[0]


@dataclass
class _Panel:
    members: list[int]
    bounds: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat


def _panels(shapes: Sequence[BaseGeometry]) -> list[_Panel]:
    """Groups of neighbouring shapes (boxes within NEAR_DEGREES); the largest group first, then
    every shape outside it alone, west to east."""
    parent = list(range(len(shapes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = [s.bounds for s in shapes]
    order = sorted(range(len(shapes)), key=lambda i: boxes[i][0])
    # Pairwise (hundreds of shapes at most: a country's jurisdictions).
    for k, i in enumerate(order):
        for j in order[k + 1 :]:
            if (
                boxes[j][0] - NEAR_DEGREES <= boxes[i][2] + NEAR_DEGREES
                and boxes[i][0] - NEAR_DEGREES <= boxes[j][2] + NEAR_DEGREES
                and boxes[j][1] - NEAR_DEGREES <= boxes[i][3] + NEAR_DEGREES
                and boxes[i][1] - NEAR_DEGREES <= boxes[j][3] + NEAR_DEGREES
            ):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(shapes)):
        groups.setdefault(root(i), []).append(i)
    main = max(groups.values(), key=len)
    panels = [_Panel(sorted(main), _union_bounds([boxes[i] for i in main]))]
    rest = sorted((i for i in range(len(shapes)) if i not in set(main)), key=lambda i: boxes[i][0])
    panels.extend(_Panel([i], boxes[i]) for i in rest)
    return panels


def _union_bounds(
    boxes: Sequence[tuple[float, float, float, float]],
) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


@dataclass(frozen=True)
class _Frame:
    """Equirectangular projection of one panel into a box at (x0, y0)."""

    x0: float
    y0: float
    west: float
    north: float
    kx: float  # SVG units per degree of longitude
    ky: float  # per degree of latitude
    width: float
    height: float

    @classmethod
    def fit(cls, bounds: Sequence[float], x0: float, y0: float, size: float) -> _Frame:
        west, south, east, north = bounds
        cos = max(math.cos(math.radians((south + north) / 2)), 0.05)
        span_x = max((east - west) * cos, 1e-6)
        span_y = max(north - south, 1e-6)
        scale = size / max(span_x, span_y)
        return cls(x0, y0, west, north, scale * cos, scale, span_x * scale, span_y * scale)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return self.x0 + (lon - self.west) * self.kx, self.y0 + (self.north - lat) * self.ky


def _path(geom: BaseGeometry, frame: _Frame) -> str:
    parts: list[str] = []
    polygons = getattr(geom, "geoms", [geom])
    for poly in polygons:
        for ring in [poly.exterior, *poly.interiors]:
            pts = [frame.xy(x, y) for x, y in ring.coords]
            if len(pts) < 3:
                continue
            head = f"M{pts[0][0]:.1f} {pts[0][1]:.1f}"
            parts.append(head + "".join(f"L{x:.1f} {y:.1f}" for x, y in pts[1:-1]) + "Z")
    return "".join(parts)


def jurisdictions_svg(
    rows: Sequence[JurisdictionCount],
) -> tuple[Markup, list[tuple[int, int | None, str]]]:
    """The inline SVG of the jurisdictions and the legend's classes (low, high, colour)."""
    drawn = [(r, shape(r.geometry)) for r in rows if r.geometry is not None]
    drawn = [(r, g) for r, g in drawn if not g.is_empty]
    if not drawn:
        return Markup(""), []
    maximum = max((r.open_leads or 0 for r, _g in drawn), default=0)
    classes = breaks_for(maximum)
    panels = _panels([g for _r, g in drawn])
    frames: list[_Frame] = []
    main = _Frame.fit(panels[0].bounds, GAP, GAP, MAIN_SIZE)
    frames.append(main)
    # The small panels in rows under the main one.
    x, y = GAP, GAP + main.height + GAP
    for p in panels[1:]:
        if x + INSET_SIZE > max(main.width, 4 * INSET_SIZE) + GAP:
            x, y = GAP, y + INSET_SIZE + GAP + 14
        frames.append(_Frame.fit(p.bounds, x, y, INSET_SIZE))
        x += INSET_SIZE + GAP
    width = max(f.x0 + f.width for f in frames) + GAP
    height = max(f.y0 + f.height for f in frames) + GAP + 14
    out: list[str] = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" '
        'aria-labelledby="map-title"><title id="map-title">Open leads by jurisdiction</title>'
    ]
    labels: list[str] = []
    for panel, frame in zip(panels, frames, strict=True):
        if panel is not panels[0]:
            out.append(
                f'<rect x="{frame.x0 - 3:.1f}" y="{frame.y0 - 3:.1f}" '
                f'width="{frame.width + 6:.1f}" height="{frame.height + 6:.1f}" fill="none" '
                'stroke="#999" stroke-width="0.8"/>'
            )
        tolerance = SIMPLIFY_PIXELS / frame.ky
        for i in panel.members:
            row, geom = drawn[i]
            simple = shapely.simplify(geom, tolerance, preserve_topology=True)
            d = _path(simple, frame)
            if row.open_leads is None:
                fill, tip = OUT_OF_SCOPE, f"{row.code} {row.name}: outside your scope"
            else:
                fill = colour_of(row.open_leads, classes)
                tip = f"{row.code} {row.name}: {row.open_leads} open lead(s)"
                if row.unit:
                    tip += f", unit {row.unit}"
            shape_svg = (
                f'<path d="{d}" fill="{fill}" stroke="#555" stroke-width="0.5">'
                f"<title>{escape(tip)}</title></path>"
            )
            if row.open_leads is None:
                out.append(f'<g class="outside" data-code="{escape(row.code)}">{shape_svg}</g>')
            else:
                out.append(
                    f'<a href="/leads?jurisdiction={escape(quote(row.code, safe=""))}" '
                    f'data-code="{escape(row.code)}" data-open="{row.open_leads}">{shape_svg}</a>'
                )
                if row.open_leads:
                    pt = geom.representative_point()
                    px, py = frame.xy(pt.x, pt.y)
                    labels.append(
                        f'<text x="{px:.1f}" y="{py + 3:.1f}" font-size="9" '
                        f'text-anchor="middle" fill="#000">{row.open_leads}</text>'
                    )
        if panel is not panels[0]:
            names = ", ".join(drawn[i][0].code for i in panel.members)
            out.append(
                f'<text x="{frame.x0:.1f}" y="{frame.y0 + frame.height + 13:.1f}" '
                f'font-size="10" fill="#333">{escape(names)}</text>'
            )
    out.extend(labels)  # numbers above every shape
    out.append("</svg>")
    legend = [(low, high, PALETTE[i]) for i, (low, high) in enumerate(classes)]
    # Every value in it is a number, a constant or escaped above.
    return Markup("".join(out)), legend  # noqa: S704


POINT_COLOURS = {
    "new": "#b30000",
    "claimed": "#e38a00",
    "in-investigation": "#1f5fa8",
    "requisition-sent": "#6a3d9a",
}


def points_svg(points: Sequence[TargetPoint]) -> Markup:
    if not points:
        return Markup("")
    lons = [p.longitude for p in points]
    lats = [p.latitude for p in points]
    pad = 0.5
    bounds = (min(lons) - pad, min(lats) - pad, max(lons) + pad, max(lats) + pad)
    frame = _Frame.fit(bounds, GAP, GAP, MAIN_SIZE)
    width, height = frame.width + 2 * GAP, frame.height + 2 * GAP
    out = [
        f'<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-labelledby="map-title">'
        '<title id="map-title">Open leads by position (GeoIP)</title>'
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#f4f7fb"/>'
    ]
    for p in points:
        x, y = frame.xy(p.longitude, p.latitude)
        tip = f"{p.label} ({p.state}) {p.jurisdiction or 'no jurisdiction'}"
        out.append(
            f'<a href="/leads/{p.target_id}" data-target="{p.target_id}">'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{POINT_COLOURS.get(p.state, "#333")}" '
            f'stroke="#fff" stroke-width="0.8"><title>{escape(tip)}</title></circle></a>'
        )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704  # numbers, constants, escaped text


# --- routes -------------------------------------------------------------------------------------


class MapJurisdiction(BaseModel):
    code: str
    name: str
    unit: str | None
    in_scope: bool = Field(description="False: another unit's; not counted, no number.")
    open_leads: int | None = Field(description="Open (not closed) leads; null outside the scope.")


class MapPoint(BaseModel):
    target_id: int
    label: str
    latitude: float
    longitude: float
    jurisdiction: str | None
    unit: str | None
    state: str


class MapAnswer(BaseModel):
    mode: str = Field(description='"jurisdictions" (a map is configured) or "points".')
    map: str | None = Field(
        description="The active jurisdiction map, e.g. 'jurisdictions v1 (...)'."
    )
    scope: list[str] | None = Field(description="Units counted; null: all.")
    open_leads: int
    without_jurisdiction: int
    not_plotted: int
    jurisdictions: list[MapJurisdiction]
    points: list[MapPoint]


def _scoped_map(request: Request) -> ScopedMap:
    found: ScopedMap = request.app.state.map
    return found


@pages_router.get("/map")
def map_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
) -> Response:
    data = _scoped_map(request).build(identity.actor)
    if data.mode == "jurisdictions":
        svg, legend = jurisdictions_svg(data.jurisdictions)
    else:
        svg, legend = points_svg(data.points), []
    return render(
        request,
        "map.html",
        {
            "data": data,
            "svg": svg,
            "legend": legend,
            "out_of_scope": OUT_OF_SCOPE,
            "point_colours": POINT_COLOURS,
            "scope": identity.principal.scope.describe(),
        },
        identity=identity,
    )


@api_router.get("/map", responses=_ERRORS)
def map_api(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
) -> MapAnswer:
    """Open leads per jurisdiction within the caller's scope (null outside it), or the targets'
    GeoIP points when no jurisdiction map is configured (audited as `map.view`)."""
    data = _scoped_map(request).build(identity.actor)
    units = identity.principal.scope.units
    return MapAnswer(
        mode=data.mode,
        map=data.map_label,
        scope=None if units is None else sorted(units),
        open_leads=data.open_leads,
        without_jurisdiction=data.without_jurisdiction,
        not_plotted=data.not_plotted,
        jurisdictions=[
            MapJurisdiction(
                code=j.code,
                name=j.name,
                unit=j.unit,
                in_scope=j.in_scope,
                open_leads=j.open_leads,
            )
            for j in data.jurisdictions
        ],
        points=[
            MapPoint(
                target_id=p.target_id,
                label=p.label,
                latitude=p.latitude,
                longitude=p.longitude,
                jurisdiction=p.jurisdiction,
                unit=p.unit,
                state=p.state,
            )
            for p in data.points
        ],
    )


def install(web: FastAPI, app: App) -> None:
    """Add the map page and its API to `web` (called by `create_app`)."""
    web.state.map = ScopedMap(app)
    web.include_router(pages_router)
    web.include_router(api_router)
