"""`peerwatch evidence ...` and `peerwatch observations`: verify, export and read the evidence
log."""

from __future__ import annotations

import csv
import enum
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from peerwatch.cli.context import app_of, err, out
from peerwatch.errors import EvidenceError, InputError
from peerwatch.evidence import bundle, record
from peerwatch.evidence.keys import key_path, load_or_create, load_public_pem, public_from_raw
from peerwatch.evidence.log import RecordFilter, iter_chain, iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, Problem, verify_stored

cli = typer.Typer(help="The signed, hash-chained evidence log: verify, export bundles, keys.")

_MAX_SHOWN = 20


def _parse_time(value: str | None, option: str) -> int | None:
    """ISO 8601 (UTC when no offset is given) to UTC milliseconds."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{option}: {value!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _trusted_keys(
    ctx: typer.Context, public_keys: list[Path] | None
) -> dict[str, Ed25519PublicKey]:
    """Keys verification trusts: given PEM files (named SENSOR.pem), else the keys in --home.

    Keys registered in the database are never trusted on their own: whoever can edit the records
    could edit those too.
    """
    app = app_of(ctx)
    trusted: dict[str, Ed25519PublicKey] = {}
    for path in public_keys or []:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
        trusted[path.name.split(".")[0]] = load_public_pem(data, str(path))
    if public_keys:
        return trusted
    for sensor_id in sensor_keys(app.engine):
        if key_path(app.settings.keys_dir, sensor_id).exists():
            key = load_or_create(app.settings.keys_dir, sensor_id)
            trusted[sensor_id] = key.private.public_key()
    return trusted


@cli.command("verify")
def verify(
    ctx: typer.Context,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="Trusted public key file SENSOR.pem (repeatable) [default: keys in --home].",
        ),
    ] = None,
    trust_database_keys: Annotated[
        bool,
        typer.Option(help="Use keys registered in the database when no trusted key is known."),
    ] = False,
) -> None:
    """Check every record of every sensor's chain; name the first bad record. Exit 4 on failure."""
    app = app_of(ctx)
    registered = sensor_keys(app.engine)
    trusted = _trusted_keys(ctx, public_key)
    if trust_database_keys:
        for sensor_id, raw in registered.items():
            trusted.setdefault(sensor_id, public_from_raw(raw))
    problems: list[Problem] = []
    reports: list[ChainReport] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("verifying {task.completed:,} records"),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("verify", total=None)
        for item in verify_stored(iter_chain(app.engine), trusted, registered):
            if isinstance(item, ChainReport):
                reports.append(item)
                bar.update(task, completed=sum(r.checked for r in reports))
            else:
                problems.append(item)
    for r in reports:
        head = r.head_link.hex() if r.head_link else "-"
        out.print(
            f"sensor {escape(r.sensor_id)}: {r.checked:,} records "
            f"(seq {r.first_seq}..{r.last_seq}),"
            f" head link {head}"
            + (f"; {r.purged:,} purged under retention (hash kept)" if r.purged else "")
        )
    if not reports and not problems:
        out.print("the evidence log is empty")
    if problems:
        first = problems[0]
        err.print(f"[bold red]FAILED[/]: first bad record: {escape(str(first))}")
        for p in problems[1:_MAX_SHOWN]:
            err.print(f"  also: {escape(str(p))}")
        if len(problems) > _MAX_SHOWN:
            err.print(f"  ... {len(problems) - _MAX_SHOWN:,} more problems")
        raise typer.Exit(EvidenceError.exit_code)
    out.print("[bold green]OK[/]: every record verifies (chain, signatures, canonical form)")


@cli.command("export")
def export(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create for the bundle.")],
    since: Annotated[
        str | None, typer.Option(help="Only records at or after (ISO 8601, UTC).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only records before (ISO 8601, UTC).")] = None,
    ip: Annotated[str | None, typer.Option(help="Only records of this remote IP.")] = None,
    content_key: Annotated[
        str | None, typer.Option(help="Only records about this content, e.g. btih:<hex>.")
    ] = None,
    sensor: Annotated[str | None, typer.Option(help="Only this sensor's records.")] = None,
) -> None:
    """Write an evidence bundle that a third party can verify (README inside explains how)."""
    app = app_of(ctx)
    flt = RecordFilter(
        sensor_id=sensor,
        since_ms=_parse_time(since, "--since"),
        until_ms=_parse_time(until, "--until"),
        ip=ip,
        content_key=content_key,
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("exporting {task.completed:,} records"),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("export", total=None)
        result = bundle.export_bundle(
            app.engine, out_dir, flt, progress=lambda n: bar.update(task, completed=n)
        )
    out.print(f"wrote {result.records:,} records from {len(result.sensors)} sensor(s) to {out_dir}")


@cli.command("verify-bundle")
def verify_bundle(
    folder: Annotated[Path, typer.Argument(help="The bundle folder.")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="Trusted public key file SENSOR.pem (repeatable)."),
    ] = None,
) -> None:
    """Check a bundle: file digests, chain links, signatures, continuity. Exit 4 on failure."""
    trusted = {
        p.name.split(".")[0]: load_public_pem(p.read_bytes(), str(p)) for p in public_key or []
    }
    report = bundle.verify_bundle(folder, trusted)
    for r in report.reports:
        out.print(
            f"sensor {escape(r.sensor_id)}: {r.checked:,} records "
            f"(seq {r.first_seq}..{r.last_seq}),"
            f" key fingerprint sha256:{report.key_fingerprints.get(r.sensor_id, '?')}"
        )
    out.print("bundle is " + ("complete" if report.complete else "a selection of records"))
    if not report.ok:
        err.print(f"[bold red]FAILED[/]: {escape(str(report.problems[0]))}")
        for p in report.problems[1:_MAX_SHOWN]:
            err.print(f"  also: {escape(str(p))}")
        raise typer.Exit(EvidenceError.exit_code)
    if not public_key:
        out.print(
            "[yellow]note[/]: checked against the bundle's own keys; compare the "
            "fingerprints above with the ones the sensor's operator published"
        )
    out.print("[bold green]OK[/]: every record verifies")


@cli.command("public-key")
def public_key(ctx: typer.Context) -> None:
    """Print this sensor's public key (PEM); made on first use."""
    sys.stdout.write(app_of(ctx).sensor_key.public_pem().decode())


class Format(enum.StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    table = "table"


_COLUMNS = (
    "sensor",
    "seq",
    "observed",
    "network",
    "method",
    "content_key",
    "ip",
    "port",
    "client",
    "peer_id",
    "completion_ppm",
    "outcome",
)


def observations(
    ctx: typer.Context,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    since: Annotated[str | None, typer.Option(help="Only at or after (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Only before (ISO 8601, UTC).")] = None,
    ip: Annotated[str | None, typer.Option(help="Only this remote IP.")] = None,
    content_key: Annotated[str | None, typer.Option(help="Only this content key.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
) -> None:
    """List recorded observations (jsonl: the signed records themselves, one per line)."""
    app = app_of(ctx)
    flt = RecordFilter(
        since_ms=_parse_time(since, "--since"),
        until_ms=_parse_time(until, "--until"),
        ip=ip,
        content_key=content_key,
    )
    rows = iter_records(app.engine, flt)
    table = _observation_table() if fmt is Format.table else None
    writer = csv.writer(sys.stdout) if fmt is Format.csv else None
    if writer is not None:
        writer.writerow(_COLUMNS)
    for n, row in enumerate(rows):
        if limit is not None and n >= limit:
            break
        if fmt is Format.jsonl:
            sys.stdout.write(row.record.decode("utf-8") + "\n")
            continue
        obs = record.decode(row.record).observation
        values = [
            row.sensor_id,
            str(row.seq),
            _iso(obs.observed_ms),
            obs.network,
            obs.method,
            obs.content_key,
            obs.ip,
            _s(obs.port),
            _s(obs.client),
            _s(obs.peer_id),
            _s(obs.completion_ppm),
            _s(obs.outcome),
        ]
        if writer is not None:
            writer.writerow(values)
        elif table is not None:
            peer = f"[{obs.ip}]" if ":" in obs.ip else obs.ip
            completion = "" if obs.completion_ppm is None else f"{obs.completion_ppm / 10_000:.1f}%"
            table.add_row(
                escape(f"{row.sensor_id}/{row.seq}"),
                _iso(obs.observed_ms),
                escape(obs.method),
                escape(obs.content_key),
                escape(peer + ("" if obs.port is None else f":{obs.port}")),
                escape(_s(obs.client)),
                completion,
                escape(_s(obs.outcome)),
            )
    if table is not None:
        out.print(table)


def _observation_table() -> Table:
    """The human view: one line per observation; the full record is in --format jsonl/csv."""
    table = Table(
        "record", "observed (UTC)", "method", "content", "peer", "client", "have", "outcome"
    )
    for i in (3, 5, 7):  # long free text: cut rather than wrap, so each observation is one line
        table.columns[i].no_wrap = True
        table.columns[i].overflow = "ellipsis"
    table.columns[3].max_width = 20
    return table


def _s(value: object) -> str:
    return "" if value is None else str(value)


__all__ = ["cli", "observations"]
