"""`peerwatch leads` and `peerwatch target ...`: targets, their score and their links, explained.

The JSON of `leads --format json` and `target show --format json` is a published interface
(docs/leads.md, "JSON output"): fields are only ever added, and `version` changes when a field
changes meaning or goes away.
"""

from __future__ import annotations

import csv
import enum
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from peerwatch.app import App
from peerwatch.cli.context import app_of, err, out
from peerwatch.errors import InputError
from peerwatch.leads.targets import TargetExplanation, TargetStore
from peerwatch.leads.workflow import Lead, LeadWorkflow

target_cli = typer.Typer(help="One target: its identity links, score, observations and claim.")

#: Version of the JSON documents below (docs/leads.md).
JSON_VERSION = 1

# Below this many pending records a refresh takes a moment and needs no bar.
_BAR_FROM = 5_000


class LeadsFormat(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ShowFormat(enum.StrEnum):
    table = "table"
    json = "json"


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{option}: {value!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_target_id(text: str) -> int:
    """ "42", "T-000042" or "t-42" -> 42."""
    m = re.fullmatch(r"(?:[Tt]-)?0*(\d+)", text.strip())
    if m is None:
        raise InputError(f"{text!r} is not a target id (42 or T-000042)", field="ID")
    return int(m.group(1))


@contextmanager
def _refresh_bar(store: TargetStore) -> Iterator[Callable[[int, int], None] | None]:
    pending = store.pending()
    if pending < _BAR_FROM:
        yield None
        return
    with Progress(
        TextColumn("assigning observations to targets"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("refresh", total=pending)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def refresh(app: App) -> None:
    """Bring the targets up to date with the evidence log, with a progress bar when long."""
    store = app.targets
    with _refresh_bar(store) as progress:
        store.refresh(progress)


def _lead_states(app: App) -> dict[int, Lead]:
    return {lead.target_id: lead for lead in LeadWorkflow(app.engine).leads()}


def _state(lead: Lead | None) -> dict[str, Any]:
    if lead is None:
        return {"state": "new", "unit": None, "holder": None, "since": None, "outcome": None}
    d = lead.as_json()
    d.pop("target_id", None)
    d.pop("updated", None)
    return d


def explanation_json(ex: TargetExplanation) -> dict[str, Any]:
    """One target as JSON (docs/leads.md): the same object in `leads` and `target show`."""
    s, p = ex.summary, ex.placement
    return {
        "id": s.id,
        "label": s.label,
        "score": s.score,
        "components": [
            {"name": c.name, "value": c.value, "points": c.points, "rule": c.rule}
            for c in ex.components
        ],
        "jurisdiction": None
        if s.jurisdiction is None
        else {
            "code": s.jurisdiction,
            "name": s.jurisdiction_name,
            "method": p.jurisdiction_method,
        },
        "unit": s.unit,
        "location": {
            "ip": p.ip,
            "seen": _iso(p.observed_ms),
            "placed": _iso(p.placed_ms),
            "country": p.country,
            "confidence": p.confidence,
            "flags": sorted(p.flags),
            "sources": list(p.sources),
            "caveats": list(p.caveats),
        },
        "first_seen": _iso(s.first_ms),
        "last_seen": _iso(s.last_ms),
        "first_ms": s.first_ms,
        "last_ms": s.last_ms,
        "ips": list(s.ips),
        "networks": list(s.networks),
        "content_keys": list(s.content_keys),
        "links": [
            {
                "id": x.id,
                "kind": x.kind,
                "reason": x.reason,
                "ip": x.ip,
                "port": x.port,
                "since": _iso(x.created_ms),
                "first_record": {"sensor": x.sensor_id, "seq": x.seq},
                "observations": x.observations,
            }
            for x in ex.links
        ],
    }


def leads(
    ctx: typer.Context,
    jurisdiction: Annotated[
        str | None, typer.Option("--jurisdiction", help="Only targets placed in this code.")
    ] = None,
    unit: Annotated[
        str | None, typer.Option("--unit", help="Only targets routed to this unit.")
    ] = None,
    fmt: Annotated[
        LeadsFormat, typer.Option("--format", help="table, json (docs/leads.md) or csv.")
    ] = LeadsFormat.table,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Measure recency at this time (ISO 8601, UTC) [default: now]."
        ),
    ] = None,
) -> None:
    """Targets ranked by score, routed to jurisdiction and unit; refreshes the targets first."""
    app = app_of(ctx)
    refresh(app)
    store = app.targets
    # One as-of time for the ranking and every explanation, even across midnight.
    as_of_ms = _parse_time(as_of, "--as-of") or time.time_ns() // 1_000_000
    ranked = store.ranked(jurisdiction=jurisdiction, unit=unit, as_of_ms=as_of_ms)
    states = _lead_states(app)
    explained = store.explain_many([t.id for t in ranked], as_of_ms=as_of_ms)
    if fmt is LeadsFormat.json:
        doc = {
            "version": JSON_VERSION,
            "as_of": _iso(as_of_ms),
            "filters": {"jurisdiction": jurisdiction, "unit": unit},
            "count": len(explained),
            "leads": [
                {"rank": i, **explanation_json(ex), "lead": _state(states.get(ex.summary.id))}
                for i, ex in enumerate(explained, start=1)
            ],
        }
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    if fmt is LeadsFormat.csv:
        names = [f"points_{c.name}" for c in explained[0].components] if explained else []
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(
            [
                "rank",
                "target",
                "id",
                "score",
                *names,
                "jurisdiction",
                "jurisdiction_name",
                "unit",
                "state",
                "location_confidence",
                "flags",
                "first_seen",
                "last_seen",
                "ips",
                "networks",
                "links",
            ]
        )
        for i, ex in enumerate(explained, start=1):
            s = ex.summary
            lead = states.get(s.id)
            w.writerow(
                [
                    i,
                    s.label,
                    s.id,
                    s.score,
                    *[c.points for c in ex.components],
                    s.jurisdiction or "",
                    s.jurisdiction_name or "",
                    s.unit or "",
                    "new" if lead is None else lead.state.value,
                    ex.placement.confidence,
                    " ".join(sorted(s.flags)),
                    _iso(s.first_ms),
                    _iso(s.last_ms),
                    " ".join(s.ips),
                    " ".join(s.networks),
                    len(ex.links),
                ]
            )
        return
    if not explained:
        out.print("no targets" + (" for these filters" if jurisdiction or unit else ""))
        return
    table = Table(title=f"{len(explained):,} leads")
    for col in ("#", "target", "score", "jurisdiction", "unit", "state", "location", "last seen"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    table.add_column("addresses")
    for i, ex in enumerate(explained, start=1):
        s = ex.summary
        lead = states.get(s.id)
        ips = ", ".join(s.ips[:3]) + (f" +{len(s.ips) - 3}" if len(s.ips) > 3 else "")
        table.add_row(
            str(i),
            s.label,
            str(s.score),
            escape(f"{s.jurisdiction} {s.jurisdiction_name or ''}".strip())
            if s.jurisdiction
            else "-",
            escape(s.unit or "-"),
            "new" if lead is None else lead.state.value,
            ex.placement.confidence + (f" ({', '.join(sorted(s.flags))})" if s.flags else ""),
            _iso(s.last_ms) or "-",
            escape(ips),
        )
    out.print(table)


@target_cli.command("show")
def show(
    ctx: typer.Context,
    target_id: Annotated[str, typer.Argument(metavar="ID", help="Target id: 42 or T-000042.")],
    fmt: Annotated[ShowFormat, typer.Option("--format", help="table or json.")] = ShowFormat.table,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of", help="Measure recency at this time (ISO 8601, UTC) [default: now]."
        ),
    ] = None,
) -> None:
    """A target: score with each component, placement with its sources, links and why, and its
    observations."""
    app = app_of(ctx)
    refresh(app)
    tid = parse_target_id(target_id)
    store = app.targets
    ex = store.explain(tid, as_of_ms=_parse_time(as_of, "--as-of"))
    observations = store.observations(tid)
    lead = _lead_states(app).get(tid)
    if fmt is ShowFormat.json:
        doc = {
            "version": JSON_VERSION,
            "as_of": _iso(ex.as_of_ms),
            "target": explanation_json(ex),
            "lead": _state(lead),
            "observations": [
                {
                    "sensor": o.sensor_id,
                    "seq": o.seq,
                    "observed": _iso(o.observed_ms),
                    "observed_ms": o.observed_ms,
                    "network": o.network,
                    "method": o.method,
                    "outcome": o.outcome,
                    "content_key": o.content_key,
                    "ip": o.ip,
                    "port": o.port,
                    "client": o.client,
                    "completion_ppm": o.completion_ppm,
                    "jurisdiction": o.placement.jurisdiction,
                    "flags": sorted(o.placement.flags),
                }
                for o in observations
            ],
        }
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    s, p = ex.summary, ex.placement
    state = "new" if lead is None else lead.state.value
    out.print(f"[bold]{s.label}[/]  score {s.score}  state {state}")
    where = f"{s.jurisdiction} {s.jurisdiction_name or ''}".strip() if s.jurisdiction else "-"
    out.print(
        f"jurisdiction {escape(where)}, unit {escape(s.unit or '-')}, location confidence "
        f"{p.confidence}; placed from {p.ip} seen {_iso(p.observed_ms)}, placed "
        f"{_iso(p.placed_ms)} with {escape(', '.join(p.sources) or 'no database')}"
    )
    for caveat in p.caveats:
        out.print(f"  [yellow]caveat:[/] {escape(caveat)}")
    score = Table(title=f"score as of {_iso(ex.as_of_ms)}")
    for col in ("component", "fact", "points", "rule"):
        score.add_column(col, justify="right" if col in ("fact", "points") else "left")
    for c in ex.components:
        score.add_row(c.name, f"{c.value:,}", str(c.points), escape(c.rule))
    score.add_row("total", "", str(s.score), "")
    out.print(score)
    # One line per link: the reason is a sentence to read and quote, not a cell to wrap.
    out.print("[bold]identity links[/] (split one off with `peerwatch target split ID --link N`)")
    for x in ex.links:
        port = "" if x.port is None else f":{x.port}"
        addr = f"[{x.ip}]{port}" if ":" in x.ip and port else f"{x.ip}{port}"
        out.print(
            f"  link {x.id} {x.kind} {escape(addr)} ({x.observations:,} observations): "
            f"{escape(x.reason)}"
        )
    obs = Table(title=f"{len(observations):,} observations")
    for col in ("observed", "sensor", "seq", "method", "outcome", "content", "address", "client"):
        obs.add_column(col)
    for o in observations:
        port = "" if o.port is None else f":{o.port}"
        obs.add_row(
            _iso(o.observed_ms) or "",
            escape(o.sensor_id),
            str(o.seq),
            o.method,
            o.outcome or "",
            escape(o.content_key),
            escape(f"{o.ip}{port}"),
            escape(o.client or ""),
        )
    out.print(obs)


@target_cli.command("split")
def split(
    ctx: typer.Context,
    target_id: Annotated[str, typer.Argument(metavar="ID", help="Target id: 42 or T-000042.")],
    ip: Annotated[
        str | None, typer.Option("--ip", help="Move every endpoint at this address.")
    ] = None,
    link: Annotated[
        int | None,
        typer.Option("--link", help="Move this link (its id in `peerwatch target show`)."),
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who splits it, recorded in the link's reason.")
    ] = None,
) -> None:
    """Undo a wrong merge: move an address or a link, with its observations, to a new target.
    The original target keeps its id (and its claim) and the rest of its observations."""
    if (ip is None) == (link is None):
        raise InputError("give exactly one of --ip and --link", field="--ip/--link")
    app = app_of(ctx)
    refresh(app)
    tid = parse_target_id(target_id)
    store = app.targets
    new_id = store.split(tid, ip=ip, link_id=link, actor=by)
    moved = store.get(new_id)
    kept = store.get(tid)
    out.print(
        f"split {moved.label} from {kept.label}: {', '.join(moved.ips)} moved "
        f"({sum(x.observations for x in store.links(new_id)):,} observations); "
        f"{kept.label} keeps {', '.join(kept.ips)}"
    )
