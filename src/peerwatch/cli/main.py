"""The `peerwatch` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

import peerwatch
from peerwatch.app import App
from peerwatch.cli import (
    case,
    demo,
    enrich,
    evidence,
    lab,
    leads,
    operation,
    sense,
    verify_peer,
    watchlist,
    web,
)
from peerwatch.cli.context import err
from peerwatch.errors import PeerwatchError
from peerwatch.settings import Settings

cli = typer.Typer(
    name="peerwatch",
    help=(
        "Open, verifiable watch of peer-to-peer networks for files whose hashes are on known "
        "lists. Hashes and metadata only: peerwatch never shows content."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
cli.add_typer(watchlist.cli, name="watchlist")
cli.add_typer(evidence.cli, name="evidence")
cli.add_typer(lab.cli, name="lab")
cli.add_typer(sense.cli, name="sense")
cli.add_typer(enrich.geoip_cli, name="geoip")
cli.add_typer(enrich.netflags_cli, name="netflags")
cli.add_typer(enrich.jurisdictions_cli, name="jurisdictions")
cli.add_typer(enrich.units_cli, name="units")
cli.add_typer(leads.target_cli, name="target")
cli.add_typer(operation.operation_cli, name="operation")
cli.add_typer(operation.retention_cli, name="retention")
cli.command("alerts")(operation.alerts)
cli.command("observations")(evidence.observations)
cli.command("demo")(demo.demo)
cli.command("verify-peer")(verify_peer.verify_peer)
cli.command("leads")(leads.leads)
cli.add_typer(web.user_cli, name="user")
cli.add_typer(web.token_cli, name="token")
cli.add_typer(web.audit_cli, name="audit")
cli.command("serve")(web.serve)
cli.add_typer(case.cli, name="case")


def _version(value: bool) -> None:
    if value:
        print(f"peerwatch {peerwatch.__version__}")
        raise typer.Exit()


@cli.callback()
def main(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="PEERWATCH_HOME",
            help="Folder for the SQLite database and sensor keys [default: per-user data dir].",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="PEERWATCH_DATABASE_URL",
            help="Database URL, e.g. postgresql://user@127.0.0.1/peerwatch "
            "[default: SQLite in --home].",
            show_default=False,
        ),
    ] = None,
    sensor: Annotated[
        str | None,
        typer.Option(
            "--sensor",
            envvar="PEERWATCH_SENSOR_ID",
            help="Sensor id used when writing evidence [default: local].",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    settings = Settings.resolve(home=home, database_url=database_url, sensor_id=sensor)
    application = App(settings)
    ctx.obj = application
    ctx.call_on_close(application.close)


def run(argv: list[str] | None = None) -> int:
    """Entry point: maps peerwatch errors to a message and an exit code (no tracebacks for
    users)."""
    try:
        # Without standalone mode click returns a command's exit status instead of exiting.
        status = cli(args=argv, standalone_mode=False)
    except PeerwatchError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except Exception as exc:  # click usage errors carry their own exit code and message
        show = getattr(exc, "show", None)
        code = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        raise
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(run())
