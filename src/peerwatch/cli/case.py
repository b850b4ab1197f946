"""`peerwatch case export` and `peerwatch case verify`: one target's case package
(docs/case-package.md)."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from peerwatch.app import App
from peerwatch.cases.export import CaseReport, CaseSources, export_case
from peerwatch.cases.verify import verify_case
from peerwatch.cli.context import app_of, err, out
from peerwatch.cli.leads import parse_target_id, refresh
from peerwatch.errors import EvidenceError, InputError
from peerwatch.evidence.keys import load_public_pem

cli = typer.Typer(help="Case packages: one target's PDF report, JSON and evidence bundle.")

_MAX_SHOWN = 20  # problems printed after the first


def _parse_time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{value!r} is not an ISO 8601 time", field=option) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        return "cli:unknown"


def _audit(app: App, report: CaseReport) -> None:
    """Record the export in the audit log, before the package is renamed into place: an export
    that cannot be audited does not happen."""
    audit = getattr(app, "audit", None)
    if audit is None:  # an installation without the audit log
        return
    audit.append(
        actor=_cli_actor(),
        address="local",
        action="case.export",
        obj=f"target:{report.target_id}",
        detail=report.audit_detail(),
    )


@cli.command("export")
def export(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET", help="Target id: 42 or T-000042.")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write; must not exist or be empty.")
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Measure score recency at this time (ISO 8601, UTC) [default: now]."
        ),
    ] = None,
) -> None:
    """Write TARGET's case package: case.pdf, case.json, evidence/ (a bundle of its records)
    and manifest.json with the SHA-256 of every file."""
    app = app_of(ctx)
    refresh(app)
    tid = parse_target_id(target)
    with err.status(f"writing the case package of {escape(target)}"):
        report = export_case(
            CaseSources(app.engine, app.targets, app.watchlist, app.leads),
            tid,
            out_dir,
            as_of_ms=_parse_time(as_of, "--as-of"),
            exported_by=_cli_actor(),
            on_export=lambda r: _audit(app, r),
        )
    out.print(
        f"wrote the case package of {report.label} to {escape(str(report.out))}: "
        f"{report.observations:,} observations from {len(report.sensors)} sensor(s), "
        f"case.pdf ({report.pdf_pages} pages), case.json, evidence/"
    )
    out.print(f"manifest.json sha256:{report.manifest_sha256}")


@cli.command("verify")
def verify(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The case package folder.")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="Trusted public key file SENSOR.pem (repeatable)."),
    ] = None,
) -> None:
    """Check a case package: file digests, the evidence bundle, and that every observation in
    case.json is the signed record it names. Exit 4 on failure."""
    trusted = {
        p.name.split(".")[0]: load_public_pem(p.read_bytes(), str(p)) for p in public_key or []
    }
    check = verify_case(folder, trusted)
    if check.bundle is not None:
        for r in check.bundle.reports:
            fingerprint = check.bundle.key_fingerprints.get(r.sensor_id, "?")
            out.print(
                f"sensor {escape(r.sensor_id)}: {r.checked:,} records, key fingerprint "
                f"sha256:{fingerprint}"
            )
    if not check.ok:
        err.print(f"[bold red]FAILED[/]: {escape(check.problems[0])}")
        for p in check.problems[1:_MAX_SHOWN]:
            err.print(f"  also: {escape(p)}")
        raise typer.Exit(EvidenceError.exit_code)
    if not public_key:
        out.print(
            "[yellow]note[/]: checked against the package's own keys; compare the fingerprints "
            "above with the ones the sensors' operator published"
        )
    out.print(
        f"[bold green]OK[/]: case package {escape(check.label)}, {check.observations:,} "
        "observations, each the signed record it names"
    )
