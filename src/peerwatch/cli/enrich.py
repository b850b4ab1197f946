"""`peerwatch geoip|netflags|jurisdictions|units ...`: where an address is and whose case it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from peerwatch.cli.context import app_of, err, out
from peerwatch.enrich.placement import FLAGS
from peerwatch.errors import InputError

geoip_cli = typer.Typer(help="GeoIP and ASN databases (MaxMind DB format).")
netflags_cli = typer.Typer(help="Network flag lists: Tor exits, VPN/hosting and CGNAT/mobile ASNs.")
jurisdictions_cli = typer.Typer(help="Jurisdictions (GeoJSON polygons or subdivision codes).")
units_cli = typer.Typer(help="Police units and the jurisdictions each one covers.")


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _codes(codes: tuple[str, ...], limit: int = 20) -> str:
    shown = ", ".join(codes[:limit])
    return shown + (f" and {len(codes) - limit} more" if len(codes) > limit else "")


def _file(path: Path) -> Path:
    if not path.is_file():
        raise InputError("no such file", source=str(path))
    return path


# -- geoip ---------------------------------------------------------------------------------------


@geoip_cli.command("set")
def geoip_set(
    ctx: typer.Context,
    city: Annotated[
        Path | None,
        typer.Option("--city", help="City database (GeoLite2-City, GeoIP2-City, DBIP-City-Lite)."),
    ] = None,
    asn: Annotated[
        Path | None,
        typer.Option("--asn", help="ASN database (GeoLite2-ASN, DBIP-ASN-Lite)."),
    ] = None,
) -> None:
    """Use these .mmdb files from now on (recorded in the database, with their build dates).

    Both files are checked before anything is recorded; the previous files stay on record.
    """
    done = app_of(ctx).geoip_config.set(city=city, asn=asn)
    for d in done:
        out.print(
            f"{d.info.role}: {escape(d.info.database_type)} built {d.info.built.isoformat()} "
            f"({escape(d.info.path)}, sha256 {d.sha256[:16]}…)"
        )


@geoip_cli.command("show")
def geoip_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the GeoIP databases in use: set with `geoip set`, or overridden by settings."""
    app = app_of(ctx)
    configured = app.geoip_config.active()
    overrides = {"city": app.settings.geoip_city, "asn": app.settings.geoip_asn}
    rows: list[dict[str, object]] = []
    for role in ("city", "asn"):
        override = overrides[role]
        c = configured.get(role)
        if override is not None:
            rows.append({"role": role, "path": str(override), "from": "setting"})
        elif c is not None:
            rows.append(
                {
                    "role": role,
                    "path": c.info.path,
                    "from": "geoip set",
                    "database_type": c.info.database_type,
                    "built": c.info.built.isoformat(),
                    "sha256": c.sha256,
                    "set": _day(c.configured_ms),
                    "present": Path(c.info.path).is_file(),
                }
            )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no GeoIP database: use `peerwatch geoip set --city FILE --asn FILE`")
        return
    table = Table("role", "type", "built", "path", "from")
    for r in rows:
        missing = "" if r.get("present", True) else " [red](missing)[/]"
        table.add_row(
            str(r["role"]),
            escape(str(r.get("database_type", "?"))),
            str(r.get("built", "?")),
            escape(str(r["path"])) + missing,
            str(r["from"]),
        )
    out.print(table)


@geoip_cli.command("lookup")
def geoip_lookup(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(help="IPv4 or IPv6 address.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Place one address: location, network, flags, jurisdiction and unit, with sources."""
    p = app_of(ctx).enricher.place(ip)
    if as_json:
        record = p.as_record()
        record["caveats"] = list(p.caveats())
        out.print_json(json.dumps(record))
        return
    where = ", ".join(x for x in (p.city, "/".join(p.subdivisions) or None, p.country) if x)
    out.print(f"ip            {p.ip}")
    out.print(f"location      {escape(where) or '-'}")
    if p.latitude is not None and p.longitude is not None:
        radius = "?" if p.accuracy_km is None else str(p.accuracy_km)
        out.print(f"coordinates   {p.latitude:.4f}, {p.longitude:.4f} (± {radius} km)")
    network = f"AS{p.asn} {p.organisation or ''}".strip() if p.asn is not None else "-"
    out.print(f"network       {escape(network)}")
    out.print(f"flags         {', '.join(sorted(p.flags)) or '-'}")
    if p.jurisdiction is not None:
        border = "" if p.border_km is None else f", border {p.border_km} km"
        out.print(
            f"jurisdiction  {escape(p.jurisdiction)} {escape(p.jurisdiction_name or '')} "
            f"(by {p.jurisdiction_method}, {p.jurisdiction_confidence}{border})"
        )
    else:
        out.print("jurisdiction  -")
    out.print(f"unit          {escape(p.unit or '-')}")
    for s in p.sources:
        out.print(f"source        {escape(s)}")
    for c in p.caveats():
        out.print(f"[yellow]caveat[/]        {escape(c)}")


# -- netflags ------------------------------------------------------------------------------------


@netflags_cli.command("import")
def netflags_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The list file.")],
    kind: Annotated[str, typer.Option("--kind", help=f"One of: {', '.join(FLAGS)}.")],
) -> None:
    """Import a list as the new version of its kind (replacing the previous one atomically).

    Tor lists: one address per line (or TorDNSEL ExitAddress lines). Other kinds: AS numbers
    (AS13335 or 13335, optional name) and/or IP networks, one per line. A bad line changes nothing.
    """
    if kind not in FLAGS:
        raise typer.BadParameter(f"unknown kind {kind!r}; one of: {', '.join(FLAGS)}")
    r = app_of(ctx).netflags.import_file(_file(path), kind)
    if r.unchanged:
        out.print(f"{kind} list version {r.version} already holds this file: nothing changed")
    else:
        out.print(f"imported {kind} list version {r.version}: {r.entries:,} entries")


@netflags_cli.command("list")
def netflags_list(ctx: typer.Context) -> None:
    """Show the active list of each kind with its provenance."""
    infos = app_of(ctx).netflags.lists()
    if not infos:
        out.print("no flag lists: use `peerwatch netflags import --kind KIND FILE`")
        return
    table = Table("kind", "version", "imported (UTC)", "entries", "source")
    for i in infos:
        table.add_row(i.kind, str(i.version), _day(i.imported_ms), f"{i.entries:,}", i.source)
    out.print(table)


# -- jurisdictions -------------------------------------------------------------------------------


@jurisdictions_cli.command("import")
def jurisdictions_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="GeoJSON FeatureCollection of the jurisdictions.")],
    code_property: Annotated[
        str, typer.Option("--code-property", help="Feature property holding the code.")
    ],
    name_property: Annotated[
        str, typer.Option("--name-property", help="Feature property holding the name.")
    ],
    country: Annotated[
        str | None,
        typer.Option(
            "--country",
            help="ISO country code: GeoIP subdivision codes are matched only for this country "
            "[default: any country].",
        ),
    ] = None,
) -> None:
    """Import jurisdiction boundaries, replacing the active map atomically (Polygon and
    MultiPolygon features; a null geometry makes a code-only jurisdiction)."""
    app = app_of(ctx)
    r = app.jurisdictions.import_geojson(
        _file(path), code_property=code_property, name_property=name_property, country=country
    )
    if r.unchanged:
        out.print(f"jurisdiction map version {r.version} already holds this file: nothing changed")
    else:
        out.print(f"imported jurisdiction map version {r.version}: {r.features:,} jurisdictions")
    if r.orphaned:
        err.print(f"[yellow]warning:[/] units cover codes not in this map: {_codes(r.orphaned)}")
    if r.uncovered:
        err.print(f"[yellow]note:[/] no unit covers {_codes(r.uncovered)}")


@jurisdictions_cli.command("list")
def jurisdictions_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the jurisdictions of the active map and the unit covering each."""
    app = app_of(ctx)
    info = app.jurisdictions.active_map()
    rows = app.jurisdictions.list_jurisdictions()
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {"code": r.code, "name": r.name, "polygon": r.has_geometry, "unit": r.unit}
                    for r in rows
                ]
            )
        )
        return
    if info is None:
        out.print("no jurisdictions: use `peerwatch jurisdictions import FILE.geojson ...`")
        return
    out.print(
        f"map version {info.version}, imported {_day(info.imported_ms)} from "
        f"{escape(info.source)}" + (f", country {info.country}" if info.country else "")
    )
    table = Table("code", "name", "polygon", "unit")
    for r in rows:
        table.add_row(
            escape(r.code), escape(r.name), "yes" if r.has_geometry else "no", escape(r.unit or "-")
        )
    out.print(table)


# Negative coordinates look like options to click; unknown "options" are taken as arguments here.
@jurisdictions_cli.command("locate", context_settings={"ignore_unknown_options": True})
def jurisdictions_locate(
    ctx: typer.Context,
    latitude: Annotated[float, typer.Argument(help="Latitude (WGS 84).")],
    longitude: Annotated[float, typer.Argument(help="Longitude (WGS 84).")],
    accuracy_km: Annotated[
        int | None,
        typer.Option("--accuracy-km", help="Radius of uncertainty around the point."),
    ] = None,
) -> None:
    """Which jurisdiction holds a point (exit status 1 when none does)."""
    snapshot = app_of(ctx).jurisdictions.snapshot()
    if snapshot is None:
        raise InputError("no jurisdictions: use `peerwatch jurisdictions import` first")
    m = snapshot.locate(latitude, longitude, accuracy_km)
    if m is None:
        out.print(f"no jurisdiction holds {latitude}, {longitude}")
        raise typer.Exit(1)
    out.print(
        f"{escape(m.code)} {escape(m.name)} (border {m.border_km} km, {m.confidence})"
        f" unit {escape(m.unit or '-')}"
    )


# -- units ---------------------------------------------------------------------------------------


@units_cli.command("import")
def units_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="CSV file: unit,name,jurisdictions (a;b;c).")],
) -> None:
    """Import the units, replacing the active ones atomically. Each jurisdiction of the active map
    belongs to at most one unit; an unknown or twice-claimed code changes nothing."""
    r = app_of(ctx).jurisdictions.import_units(_file(path))
    if r.unchanged:
        out.print(f"units version {r.version} already hold this file: nothing changed")
    else:
        out.print(f"imported units version {r.version}: {r.units:,} units")
    if r.uncovered:
        err.print(f"[yellow]note:[/] no unit covers {_codes(r.uncovered)}")


@units_cli.command("list")
def units_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the units and the jurisdictions each covers."""
    rows = app_of(ctx).jurisdictions.list_units()
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {"unit": u.code, "name": u.name, "jurisdictions": list(u.jurisdictions)}
                    for u in rows
                ]
            )
        )
        return
    if not rows:
        out.print("no units: use `peerwatch units import FILE.csv`")
        return
    table = Table("unit", "name", "jurisdictions")
    for u in rows:
        table.add_row(escape(u.code), escape(u.name), ", ".join(u.jurisdictions) or "-")
    out.print(table)
