"""`peerwatch operation ...` and the claim commands of `peerwatch target`: deconfliction and
national operations; `peerwatch alerts` and `peerwatch retention purge`.

Every `--format json` document here is a published interface (docs/operations.md, "JSON output"):
fields are only ever added, and `version` changes when a field changes meaning or goes away.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from peerwatch.app import App
from peerwatch.audit.log import local_actor
from peerwatch.cli.context import app_of, out
from peerwatch.cli.leads import parse_target_id, refresh, target_cli
from peerwatch.leads.operation import OperationFilters
from peerwatch.leads.workflow import OUTCOMES, Lead, LeadError, iso_ms

operation_cli = typer.Typer(help="National operations: frozen sets of leads, dispatched per unit.")
retention_cli = typer.Typer(help="Retention of observations of targets nobody claimed.")

#: Version of the JSON documents printed by these commands (docs/operations.md).
JSON_VERSION = 1

_ID = Annotated[str, typer.Argument(metavar="ID", help="Target id: 42 or T-000042.")]
_BY = Annotated[str, typer.Option("--by", help="The user acting (recorded in the lead's history).")]
_NOTE = Annotated[str | None, typer.Option("--note", help="A note kept in the history.")]
_ACTING_UNIT = Annotated[
    str | None,
    typer.Option("--unit", help="The unit acting; refused unless it holds the target."),
]


class Format(enum.StrEnum):
    table = "table"
    json = "json"


_FMT = Annotated[Format, typer.Option("--format", help="table or json (docs/operations.md).")]


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


def _json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"version": JSON_VERSION, **doc}, indent=2, ensure_ascii=False))
    sys.stdout.write("\n")


def _print_lead(lead: Lead, what: str, fmt: Format) -> None:
    if fmt is Format.json:
        _json({"lead": lead.as_json()})
        return
    if lead.unit is None:
        out.print(f"target {lead.target_id} {what}: {lead.state.value}, held by nobody")
    else:
        out.print(
            f"target {lead.target_id} {what}: {lead.state.value}"
            f"{f' ({lead.outcome})' if lead.outcome else ''}, held by unit "
            f"{escape(lead.unit)} since {iso_ms(lead.since_ms)} "
            f"(claimed by {escape(lead.holder or '?')})"
        )


# --- peerwatch target claim|release|transfer|state|history ---


def _audited(
    app: App, action: str, target_id: int, by: str, unit: str | None, change: Callable[[], Lead]
) -> Lead:
    """Every claim, release, transfer and state change, done or refused, goes into the audit log
    as the web app's do (same action names), with the OS user as actor and --by in the detail."""
    try:
        lead = change()
    except LeadError as exc:
        app.audit.append(
            actor=local_actor(),
            action=action,
            unit=unit,
            obj=f"target:{target_id}",
            detail={"ok": False, "by": by, "refused": str(exc)},
        )
        raise
    app.audit.append(
        actor=local_actor(),
        action=action,
        unit=lead.unit,
        obj=f"target:{target_id}",
        detail={"ok": True, "by": by, "state": str(lead.state.value), "unit": lead.unit},
    )
    return lead


@target_cli.command("claim")
def claim(
    ctx: typer.Context,
    target_id: _ID,
    unit: Annotated[str, typer.Option("--unit", help="Code of the unit claiming the target.")],
    by: _BY,
    note: _NOTE = None,
    fmt: _FMT = Format.table,
) -> None:
    """Claim a target for a unit. One unit holds a target at a time: a target held by another
    unit is refused, naming the holder and since when (exit 6)."""
    app = app_of(ctx)
    tid = parse_target_id(target_id)
    lead = _audited(
        app,
        "target.claim",
        tid,
        by,
        unit,
        lambda: app.leads.claim(tid, unit=unit, actor=by, note=note),
    )
    _print_lead(lead, "claimed", fmt)


@target_cli.command("release")
def release(
    ctx: typer.Context,
    target_id: _ID,
    by: _BY,
    unit: _ACTING_UNIT = None,
    note: _NOTE = None,
    fmt: _FMT = Format.table,
) -> None:
    """Give a claimed target back: it is a new lead again, which any unit may claim."""
    app = app_of(ctx)
    tid = parse_target_id(target_id)
    lead = _audited(
        app,
        "target.release",
        tid,
        by,
        unit,
        lambda: app.leads.release(tid, actor=by, unit=unit, note=note),
    )
    _print_lead(lead, "released", fmt)


@target_cli.command("transfer")
def transfer(
    ctx: typer.Context,
    target_id: _ID,
    to: Annotated[str, typer.Option("--to", help="Code of the unit that takes the target.")],
    by: _BY,
    unit: _ACTING_UNIT = None,
    note: _NOTE = None,
    fmt: _FMT = Format.table,
) -> None:
    """Hand a claimed target to another unit, which holds it from now on."""
    app = app_of(ctx)
    tid = parse_target_id(target_id)
    lead = _audited(
        app,
        "target.transfer",
        tid,
        by,
        unit,
        lambda: app.leads.transfer(tid, to_unit=to, actor=by, unit=unit, note=note),
    )
    _print_lead(lead, "transferred", fmt)


@target_cli.command("state")
def state(
    ctx: typer.Context,
    target_id: _ID,
    new_state: Annotated[
        str,
        typer.Argument(
            metavar="STATE",
            help="in-investigation, requisition-sent or closed (closed needs --outcome).",
        ),
    ],
    by: _BY,
    outcome: Annotated[
        str | None,
        typer.Option("--outcome", help=f"How a closed lead ended: {', '.join(OUTCOMES)}."),
    ] = None,
    unit: _ACTING_UNIT = None,
    note: _NOTE = None,
    fmt: _FMT = Format.table,
) -> None:
    """Move a held target along the investigation; illegal moves are refused with the legal ones
    (exit 6)."""
    app = app_of(ctx)
    tid = parse_target_id(target_id)
    lead = _audited(
        app,
        "target.state",
        tid,
        by,
        unit,
        lambda: app.leads.set_state(
            tid, new_state, actor=by, unit=unit, outcome=outcome, note=note
        ),
    )
    _print_lead(lead, "now", fmt)


@target_cli.command("history")
def history(ctx: typer.Context, target_id: _ID, fmt: _FMT = Format.table) -> None:
    """Every change of a target's lead: who, for which unit, when, from and to which state."""
    app = app_of(ctx)
    tid = parse_target_id(target_id)
    lead = app.leads.get(tid)
    entries = app.leads.history(tid)
    if fmt is Format.json:
        _json({"lead": lead.as_json(), "history": [h.as_json() for h in entries]})
        return
    _print_lead(lead, "is", fmt)
    if not entries:
        out.print("no change recorded: nobody has claimed it")
        return
    table = Table("when (UTC)", "by", "unit", "action", "from", "to", "note")
    for h in entries:
        moved = f" -> {h.to_unit}" if h.action == "transfer" and h.to_unit is not None else ""
        table.add_row(
            iso_ms(h.at_ms),
            escape(h.actor),
            escape((h.unit or "-") + moved),
            h.action,
            h.from_state,
            h.to_state + (f" ({h.outcome})" if h.outcome else ""),
            escape(h.note or ""),
        )
    out.print(table)


# --- peerwatch alerts ---


def alerts(
    ctx: typer.Context,
    unit: Annotated[
        str | None, typer.Option("--unit", help="Only this unit's alerts [default: all units].")
    ] = None,
    ack: Annotated[
        list[int] | None,
        typer.Option("--ack", help="Acknowledge this alert id (repeatable); needs --by."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="The user acknowledging.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include acknowledged alerts.")] = False,
    fmt: _FMT = Format.table,
) -> None:
    """Scan for alerts (a new lead in a unit's jurisdiction; a claimed target seen again after the
    claim), then list the open ones. Scanning twice raises nothing twice."""
    app = app_of(ctx)
    if ack:
        if not by:
            raise typer.BadParameter("--ack needs --by NAME (who acknowledges)")
        for alert_id in ack:
            done = app.alerts.acknowledge(alert_id, actor=by, unit=unit)
            if fmt is Format.table:
                out.print(
                    f"alert {done.id} acknowledged by {escape(done.acknowledged_by or '?')} "
                    f"at {iso_ms(done.acknowledged_ms)}"
                )
        if fmt is Format.table:
            return
    refresh(app)
    written = app.alerts.scan(unit=unit)
    listed = app.alerts.list(unit=unit, include_acknowledged=show_all)
    if fmt is Format.json:
        _json({"new": [a.id for a in written], "alerts": [a.as_json() for a in listed]})
        return
    if not listed:
        out.print("no open alerts" + (f" for unit {escape(unit)}" if unit else ""))
        return
    table = Table("id", "unit", "kind", "target", "when (UTC)", "what", "acknowledged")
    fresh = {a.id for a in written}
    for a in listed:
        table.add_row(
            f"{a.id}{' *' if a.id in fresh else ''}",
            escape(a.unit),
            a.kind.value,
            str(a.target_id),
            iso_ms(a.created_ms),
            escape(a.sentence()),
            escape(f"{iso_ms(a.acknowledged_ms)} by {a.acknowledged_by}")
            if a.acknowledged_ms
            else "",
        )
    out.print(table)
    out.print(f"{len(written)} new (*), {len(listed)} listed")


# --- peerwatch operation create|list|show|dispatch ---


@operation_cli.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A unique name, e.g. 'Operation Nov 2026'.")],
    by: _BY,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Only targets scoring at least this.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only targets seen at or after (ISO 8601, UTC)."),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option("--category", help="Only targets with content in this watchlist category."),
    ] = None,
    jurisdiction: Annotated[
        list[str] | None,
        typer.Option("--jurisdiction", help="Only targets in this jurisdiction (repeatable)."),
    ] = None,
    include_closed: Annotated[
        bool, typer.Option("--include-closed", help="Also pick closed leads.")
    ] = False,
    fmt: _FMT = Format.table,
) -> None:
    """Pick leads across jurisdictions by filters and freeze them into an operation: later
    score changes and observations do not alter it."""
    app = app_of(ctx)
    refresh(app)
    filters = OperationFilters(
        min_score=min_score,
        since_ms=_parse_time(since, "--since"),
        category=category,
        jurisdictions=tuple(jurisdiction or ()),
        include_closed=include_closed,
    )
    op = app.operations.create(name, filters, actor=by)
    if fmt is Format.json:
        _json(app.operations.show(op.id))
        return
    summary = app.operations.summary(op)
    out.print(f"operation {op.id} {escape(op.name)!r} created: {summary['headline']}")
    for u in summary["by_unit"]:
        out.print(f"  {escape(u['unit'])}: {u['targets']} target(s)")


@operation_cli.command("list")
def list_operations(ctx: typer.Context, fmt: _FMT = Format.table) -> None:
    """Every operation: id, name, when and by whom it was created, its filters."""
    app = app_of(ctx)
    ops = app.operations.list()
    if fmt is Format.json:
        _json({"operations": [o.header() for o in ops]})
        return
    if not ops:
        out.print("no operations")
        return
    table = Table("id", "name", "created (UTC)", "by", "filters")
    for o in ops:
        filters = ", ".join(f"{k}={v}" for k, v in o.filters.items() if v not in (None, [], False))
        table.add_row(
            str(o.id), escape(o.name), iso_ms(o.created_ms), escape(o.created_by), filters
        )
    out.print(table)


@operation_cli.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ID", help="Operation id or name.")],
    fmt: _FMT = Format.table,
) -> None:
    """An operation's frozen targets, per unit, with the national summary."""
    app = app_of(ctx)
    doc = app.operations.show(ref)
    if fmt is Format.json:
        _json(doc)
        return
    op = doc["operation"]
    out.print(
        f"operation {op['id']} {escape(op['name'])!r}, created {op['created']} by "
        f"{escape(op['created_by'])}: {doc['headline']}"
    )
    table = Table("unit", "target", "score", "jurisdiction", "last seen", "lead", "lines", "warn")
    for t in doc["targets"]:
        table.add_row(
            escape(t["unit"] or "-"),
            t["label"],
            str(t["score"]),
            escape(f"{t['jurisdiction'] or '-'} {t['jurisdiction_name'] or ''}".strip()),
            t["last_seen"],
            t["lead"]["state"],
            str(len(t["requisition"])),
            str(len(t["warnings"])) if t["warnings"] else "",
        )
    out.print(table)


@operation_cli.command("dispatch")
def dispatch(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="ID", help="Operation id or name.")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to create (must not exist or be empty).")
    ],
) -> None:
    """Write one package per unit (targets JSON + CSV, requisition lines CSV, manifest with
    SHA-256 of each file) and the national summary; all or nothing."""
    app = app_of(ctx)
    result = app.operations.dispatch(ref, out_dir)
    out.print(f"{result.headline}; wrote {escape(str(result.out))}")
    for unit, n in result.units.items():
        out.print(f"  {escape(unit)}: {n} target(s)")


# --- peerwatch retention purge|log ---


@retention_cli.command("purge")
def purge(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            help="Purge observations older than this [default: setting retention_days, 180].",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; change nothing.")
    ] = False,
    by: Annotated[
        str, typer.Option("--by", help="The user running the purge (recorded).")
    ] = "retention",
    fmt: _FMT = Format.table,
) -> None:
    """Purge the observations of targets never claimed (and in no operation) older than the
    retention period; the evidence chain keeps verifying and the purge is logged."""
    app = app_of(ctx)
    refresh(app)
    result = app.retention.purge(actor=by, days=days, dry_run=dry_run)
    if fmt is Format.json:
        _json({"purge": result.as_json()})
        return
    verb = "would purge" if dry_run else "purged"
    out.print(
        f"{verb} {result.records:,} observation(s) of {result.targets:,} target(s) observed "
        f"before {iso_ms(result.cutoff_ms)} ({result.days} days)"
        + ("" if dry_run else f"; logged as purge {result.id}")
    )


@retention_cli.command("log")
def purge_log(ctx: typer.Context, fmt: _FMT = Format.table) -> None:
    """Every purge: when, by whom, under which rule, how many records of how many targets."""
    app = app_of(ctx)
    purges = app.retention.log()
    if fmt is Format.json:
        _json({"purges": [p.as_json() for p in purges]})
        return
    if not purges:
        out.print("no purge so far")
        return
    table = Table("id", "when (UTC)", "by", "days", "before", "records", "targets")
    for p in purges:
        table.add_row(
            str(p.id),
            iso_ms(p.at_ms),
            escape(p.actor),
            str(p.days),
            iso_ms(p.cutoff_ms),
            f"{p.records:,}",
            f"{p.targets:,}",
        )
    out.print(table)
    out.print(f"rule: {escape(purges[-1].rule)}")
