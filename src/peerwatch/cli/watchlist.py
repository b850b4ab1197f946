"""`peerwatch watchlist ...`: import, list, inspect and match hash lists."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from peerwatch.cli.context import app_of, err, out
from peerwatch.domain.hashes import HashKind, HashParseError, parse_hash
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import FORMATS
from peerwatch.watchlist.index import MatchIndex

cli = typer.Typer(help="Hash lists: import (VICS JSON, CSV, text, .torrent, magnet), list, match.")

_KINDS = ", ".join(k.value for k in HashKind)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _kind(value: str | None) -> HashKind | None:
    if value is None:
        return None
    try:
        return HashKind(value)
    except ValueError:
        raise typer.BadParameter(f"unknown kind {value!r}; one of: {_KINDS}") from None


@cli.command("import")
def import_(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="List files to import as one version.")],
    list_name: Annotated[
        str | None,
        typer.Option("--list", help="List name [default: the first file's name without suffix]."),
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="Category for entries whose record has none.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help=f"Override detection: {', '.join(FORMATS)}."),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            help="Kind of every plain-text hash, for ambiguous lengths (md5 or ed2k, sha1 or "
            "btih, sha256 or btmh). Without it they are stored as 'either' and matched as both."
        ),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(help="Skip invalid records (each is reported) instead of importing nothing."),
    ] = False,
) -> None:
    """Import hash lists as a new version of a list, replacing its active version atomically.

    Importing the same files again changes nothing. On an invalid record nothing is written
    (unless --skip-invalid), and the error names the file, line or record, and field.
    """
    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; one of: {', '.join(FORMATS)}")
    for p in paths:
        if not p.is_file():
            raise InputError("no such file", source=str(p))
    name = list_name or paths[0].name.split(".")[0]
    app = app_of(ctx)
    with Progress(
        SpinnerColumn(),
        TextColumn("importing [bold]{task.description}"),
        TextColumn("{task.completed:,} records"),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(escape(name), total=None)
        result = app.watchlist.import_files(
            paths,
            list_name=name,
            fmt=fmt,
            kind=_kind(kind),
            category=category,
            skip_invalid=skip_invalid,
            progress=lambda n: bar.update(task, completed=n),
        )
    for problem in result.skipped:
        err.print(f"[yellow]skipped:[/] {escape(str(problem))}")
    if result.unchanged:
        out.print(
            f"list {escape(name)!s} version {result.version} already holds these files: "
            f"nothing changed ({result.items:,} records, {result.hashes:,} hashes)"
        )
        return
    replaced = (
        "" if result.replaced_version is None else f", replacing version {result.replaced_version}"
    )
    out.print(
        f"imported list {escape(name)} version {result.version}{replaced}: "
        f"{result.items:,} records, {result.hashes:,} hashes"
        + (f", {len(result.skipped):,} invalid records skipped" if result.skipped else "")
    )


@cli.command("lists")
def lists(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the lists with their active version and provenance."""
    infos = app_of(ctx).watchlist.lists()
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "name": i.name,
                        "version": i.version,
                        "imported": _iso(i.imported_ms),
                        "records": i.items,
                        "hashes": i.hashes,
                        "skipped": i.skipped,
                        "default_category": i.default_category,
                        "sources": i.sources,
                    }
                    for i in infos
                ]
            )
        )
        return
    table = Table("list", "version", "imported (UTC)", "records", "hashes", "sources")
    for i in infos:
        table.add_row(
            escape(i.name),
            str(i.version),
            _iso(i.imported_ms),
            f"{i.items:,}",
            f"{i.hashes:,}",
            escape(", ".join(f"{s['path']} ({s['format']})" for s in i.sources)),
        )
    out.print(table)


@cli.command("stats")
def stats(ctx: typer.Context) -> None:
    """Count active hashes per kind and build the in-memory match index the sensors use."""
    app = app_of(ctx)
    counts = app.watchlist.kind_counts()
    total = sum(counts.values())
    with Progress(
        TextColumn("loading match index"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("index", total=total)
        index = MatchIndex.from_rows(
            app.watchlist.iter_active_hashes(),
            total=total,
            progress=lambda n: bar.update(task, completed=n),
        )
    table = Table("kind", "hashes on lists")
    for k in sorted(counts):
        table.add_row(k, f"{counts[k]:,}")
    out.print(table)
    per = index.nbytes / len(index) if len(index) else 0.0
    out.print(
        f"{len(app.watchlist.lists())} lists, {total:,} hashes; match index: {len(index):,} "
        f"entries by concrete kind, {index.nbytes:,} bytes ({per:.1f} bytes/entry)"
    )


@cli.command("remove")
def remove(
    ctx: typer.Context,
    list_name: Annotated[str, typer.Option("--list", help="Name of the list to remove.")],
) -> None:
    """Remove a list and all its versions."""
    if not app_of(ctx).watchlist.remove(list_name):
        raise InputError(f"no list named {list_name!r}")
    out.print(f"removed list {escape(list_name)}")


@cli.command("match")
def match(
    ctx: typer.Context,
    hashes: Annotated[list[str], typer.Argument(help="Hashes (hex, or base32 for SHA-1/btih).")],
    kind: Annotated[
        str | None, typer.Option(help="Kind of the given hashes [default: from length, any kind].")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Say which lists hold each hash, with provenance. Exit status 1 when none matched."""
    k = _kind(kind)
    digests = []
    for i, text in enumerate(hashes, start=1):
        try:
            digests.append(parse_hash(text, k))
        except HashParseError as exc:
            raise InputError(str(exc), source="command line", location=f"hash {i}") from None
    matches = app_of(ctx).watchlist.match(digests)
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "query": m.query.hex,
                        "kind": m.kind,
                        "list": m.list_name,
                        "list_version": m.list_version,
                        "imported": _iso(m.imported_ms),
                        "source": m.source,
                        "location": m.location,
                        "category": m.category,
                        "name": m.name,
                        "size": m.size,
                    }
                    for m in matches
                ]
            )
        )
    else:
        found = {m.query for m in matches}
        for d in digests:
            if d not in found:
                out.print(f"{d.hex}  [dim]no match[/]")
        for m in matches:
            out.print(
                f"{m.query.hex}  [bold]{escape(m.list_name)}[/] v{m.list_version} as {m.kind}"
                f"  {escape(m.source)}:{escape(m.location)}"
                + (f"  category {escape(m.category)}" if m.category else "")
            )
    if not matches:
        raise typer.Exit(1)
