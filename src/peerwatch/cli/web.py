"""`peerwatch serve`, `peerwatch user ...`, `peerwatch token ...`, `peerwatch audit ...`: the web
app, its accounts and its audit log (docs/webapp.md)."""

from __future__ import annotations

import ipaddress
import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from peerwatch.accounts import totp
from peerwatch.accounts.role import Role
from peerwatch.app import App
from peerwatch.audit.entry import AuditError
from peerwatch.audit.log import local_actor
from peerwatch.cli.context import app_of, err, out
from peerwatch.errors import InputError

user_cli = typer.Typer(help="Accounts of the web app: add, list, disable and enable users.")
token_cli = typer.Typer(help="API tokens for scripts and sensors (bearer tokens).")
audit_cli = typer.Typer(help="The hash-chained audit log: show and verify.")

_ROLES = ", ".join(r.value for r in Role)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _audit(app: App, action: str, obj: str, detail: dict[str, str | bool | None]) -> None:
    app.audit.append(actor=local_actor(), address="local", action=action, obj=obj, detail=detail)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8470,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host (put HTTPS in front and use --secure-cookies).",
        ),
    ] = False,
    secure_cookies: Annotated[
        bool,
        typer.Option(
            "--secure-cookies", help="Mark cookies Secure (__Host- names): for HTTPS only."
        ),
    ] = False,
) -> None:
    """Serve the web app and the JSON API (loopback only unless --allow-remote)."""
    if not _is_loopback(host) and not allow_remote:
        raise InputError(
            f"{host} is not a loopback address: the web app listens on loopback only unless "
            "--allow-remote is given (then serve it behind HTTPS, with --secure-cookies)",
            field="--host",
        )
    import uvicorn

    from peerwatch.web.context import WebConfig
    from peerwatch.web.security import CookieConfig
    from peerwatch.web.site import create_app

    app = app_of(ctx)
    web = create_app(app, WebConfig(cookies=CookieConfig(secure=secure_cookies)))
    out.print(f"peerwatch web app on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(web, host=host, port=port, log_level="info", server_header=False)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first: str = typer.prompt("Password", hide_input=True)
    again: str = typer.prompt("Repeat the password", hide_input=True)
    if first != again:
        raise InputError("the two passwords differ", field="password")
    return first


@user_cli.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Sign-in name (lowercase letters, digits, . _ @ -).")],
    role: Annotated[str, typer.Option("--role", help=f"One of: {_ROLES}.")],
    unit: Annotated[
        str | None, typer.Option("--unit", help="Unit code (investigators only).")
    ] = None,
    with_totp: Annotated[
        bool, typer.Option("--totp", help="Require a TOTP second factor; prints its URI once.")
    ] = False,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
    ] = False,
) -> None:
    """Create a web app account (the password is asked for, or read with --password-stdin)."""
    app = app_of(ctx)
    password = _password(password_stdin)
    user, secret = app.accounts.add_user(name, role, password, unit=unit, with_totp=with_totp)
    _audit(
        app,
        "user.add",
        f"user:{user.name}",
        {"role": user.role.value, "unit": user.unit, "totp": user.totp},
    )
    where = f", unit {user.unit}" if user.unit else ""
    out.print(f"added user {escape(user.name)} ({user.role.value}{escape(where)})")
    if secret is not None:
        out.print("TOTP: enter this URI in the user's authenticator app (it is not shown again):")
        out.print(escape(totp.provisioning_uri(secret, user.name)), markup=False)


@user_cli.command("list")
def user_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Every account: name, role, unit, second factor, disabled, created."""
    users = app_of(ctx).accounts.users()
    if as_json:
        rows = [
            {
                "name": u.name,
                "role": u.role.value,
                "unit": u.unit,
                "totp": u.totp,
                "disabled": u.disabled,
                "created_ms": u.created_ms,
            }
            for u in users
        ]
        print(json.dumps(rows, indent=2))
        return
    if not users:
        out.print("no users yet: peerwatch user add NAME --role ROLE")
        return
    table = Table("name", "role", "unit", "TOTP", "disabled", "created (UTC)")
    for u in users:
        table.add_row(
            escape(u.name),
            u.role.value,
            escape(u.unit or "-"),
            "yes" if u.totp else "no",
            "yes" if u.disabled else "no",
            _iso(u.created_ms),
        )
    out.print(table)


@user_cli.command("disable")
def user_disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The account to disable.")],
) -> None:
    """Disable an account: its sessions end now and it can no longer sign in."""
    app = app_of(ctx)
    app.accounts.set_disabled(name, True)
    _audit(app, "user.disable", f"user:{name}", {})
    out.print(f"disabled user {escape(name)}; its sessions are closed")


@user_cli.command("reset-totp")
def user_reset_totp(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The account that gets a new TOTP secret.")],
) -> None:
    """Give an account a new TOTP second factor (a lost phone, a lost accounts key): prints its
    URI once; the old codes stop working and the account's sessions end."""
    app = app_of(ctx)
    secret = app.accounts.reset_totp(name)
    _audit(app, "user.reset-totp", f"user:{name}", {})
    out.print(f"new TOTP secret for user {escape(name)}; its sessions are closed")
    out.print("TOTP: enter this URI in the user's authenticator app (it is not shown again):")
    out.print(escape(totp.provisioning_uri(secret, name)), markup=False)


@user_cli.command("enable")
def user_enable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The account to enable again.")],
) -> None:
    """Enable a disabled account again."""
    app = app_of(ctx)
    app.accounts.set_disabled(name, False)
    _audit(app, "user.enable", f"user:{name}", {})
    out.print(f"enabled user {escape(name)}")


@token_cli.command("add")
def token_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    role: Annotated[str, typer.Option("--role", help=f"One of: {_ROLES}.")],
    unit: Annotated[
        str | None, typer.Option("--unit", help="Unit code (investigator tokens only).")
    ] = None,
) -> None:
    """Create an API token; its value is printed once and stored only as a hash."""
    app = app_of(ctx)
    token, value = app.accounts.add_token(name, role, unit=unit)
    _audit(app, "token.add", f"token:{token.name}", {"role": token.role.value, "unit": token.unit})
    err.print(f"token {escape(token.name)} ({token.role.value}); it is not shown again:")
    print(value)


@token_cli.command("list")
def token_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Every API token: name, role, unit, created, revoked (never the value)."""
    tokens = app_of(ctx).accounts.tokens()
    if as_json:
        rows = [
            {
                "name": t.name,
                "role": t.role.value,
                "unit": t.unit,
                "created_ms": t.created_ms,
                "revoked_ms": t.revoked_ms,
            }
            for t in tokens
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "role", "unit", "created (UTC)", "revoked (UTC)")
    for t in tokens:
        revoked = "-" if t.revoked_ms is None else _iso(t.revoked_ms)
        table.add_row(
            escape(t.name), t.role.value, escape(t.unit or "-"), _iso(t.created_ms), revoked
        )
    out.print(table)


@token_cli.command("revoke")
def token_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token to revoke.")],
) -> None:
    """Revoke an API token: it opens nothing from now on."""
    app = app_of(ctx)
    app.accounts.revoke_token(name)
    _audit(app, "token.revoke", f"token:{name}", {})
    out.print(f"revoked token {escape(name)}")


@audit_cli.command("show")
def audit_show(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest entries to show.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, oldest first.")] = False,
) -> None:
    """The newest audit entries (who, what, when, from where) and the head of the chain."""
    app = app_of(ctx)
    entries = list(reversed(app.audit.latest(limit)))
    if as_json:
        for e in entries:
            print(json.dumps({**e.record(), "link": e.link.hex()}, sort_keys=True))
        return
    table = Table("#", "time (UTC)", "actor", "role", "unit", "from", "action", "object", "detail")
    for e in entries:
        table.add_row(
            str(e.seq),
            _iso(e.at_ms),
            escape(e.actor),
            e.role or "-",
            escape(e.unit or "-"),
            escape(e.address or "-"),
            escape(e.action),
            escape(e.object or "-"),
            escape(json.dumps(dict(e.detail), sort_keys=True)),
        )
    out.print(table)
    seq, link = app.audit.head()
    out.print(f"head: {seq}:{link.hex()}")


def _anchor(text: str | None) -> tuple[int, bytes] | None:
    if text is None:
        return None
    seq, _, link = text.partition(":")
    try:
        value = (int(seq), bytes.fromhex(link))
    except ValueError:
        value = (0, b"")
    if value[0] < 1 or len(value[1]) != 32:
        raise InputError(f"{text!r} is not SEQ:LINK (a number and 64 hex digits)", field="--anchor")
    return value


@audit_cli.command("verify")
def audit_verify(
    ctx: typer.Context,
    anchor: Annotated[
        str | None,
        typer.Option(
            "--anchor",
            help="SEQ:LINK noted earlier (from `audit show` or `audit verify`): also proves "
            "nothing up to it was removed and the chain was not rebuilt.",
        ),
    ] = None,
) -> None:
    """Check the whole chain; name the first bad entry (exit 7 when it does not verify)."""
    report = app_of(ctx).audit.verify(anchor=_anchor(anchor))
    if report.ok:
        out.print(
            f"[bold green]OK[/]: {report.checked:,} audit entries verify; "
            f"head {report.head_seq}:{report.head_link.hex()}"
        )
        return
    first = report.problems[0]
    err.print(f"[bold red]FAILED[/]: first bad entry: {escape(str(first))}")
    for p in report.problems[1:20]:
        err.print(f"  also: {escape(str(p))}")
    raise typer.Exit(AuditError.exit_code)
