"""Targets as the web app reads them: always within the reader's scope, every view audited.

The scope goes into the query (`units=`), so rows of other units are never read. A single target is
fetched by id and its unit checked against the scope; outside it the answer is "not found", the
same as for an id that does not exist, so that existence does not leak. Should the store ever hand
back a row outside the scope (a broken query), the request fails closed with an error instead of
showing it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal, Protocol, get_args

from peerwatch.accounts.role import Principal, Scope
from peerwatch.audit.entry import AuditEntry
from peerwatch.audit.log import AuditLog
from peerwatch.errors import InputError, PeerwatchError
from peerwatch.leads.targets import TargetSummary
from peerwatch.leads.workflow import LeadError

MAX_LISTED = 500  # targets per list page or API answer, at most
PAGE_SIZE = 100  # targets per list page unless the reader asks for another size
MAX_OFFSET = 1_000_000_000  # far beyond any installation; bounds what a request may ask

#: The lead-state filter of the list and the API: "open" (every state but closed), "all", or one
#: state of `peerwatch.leads.workflow.LeadState` (a test keeps the two in step).
StateFilter = Literal[
    "open", "all", "new", "claimed", "in-investigation", "requisition-sent", "closed"
]
STATE_FILTERS: tuple[str, ...] = get_args(StateFilter)


def store_state(state: str) -> str | None:
    """The `state` argument of `TargetStore.ranked` for a filter ("all" is no filter)."""
    return None if state == "all" else state


class TargetReader(Protocol):
    """What the web app needs of `peerwatch.leads.targets.TargetStore`."""

    def ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
        state: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Sequence[TargetSummary]: ...

    def count_ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
        state: str | None = None,
    ) -> int: ...

    def get(self, target_id: int, /) -> TargetSummary: ...

    def observations(self, target_id: int, /) -> Sequence[object]: ...

    def explain(self, target_id: int, /) -> object: ...


class ScopeViolationError(PeerwatchError):
    """The targets store returned a row outside the scope it was asked for: a bug, never shown."""


class TargetNotFoundError(LookupError):
    """No such target, or not one the reader may see (the two are not told apart)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    """Who reads, and from where: what every audit entry of a read records."""

    principal: Principal
    address: str

    def audit(
        self, log: AuditLog, action: str, obj: str | None, detail: dict[str, Any]
    ) -> AuditEntry:
        return log.append(
            actor=self.principal.name,
            role=self.principal.role.value,
            unit=self.principal.unit,
            address=self.address,
            action=action,
            obj=obj,
            detail=detail,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class TargetPage:
    """One page of the ranked list: rows `offset`+1 .. `offset`+len(rows) of `total`."""

    rows: list[TargetSummary]
    total: int  # every target the filters and the scope select, on all pages
    offset: int
    limit: int

    @property
    def first(self) -> int:
        """The 1-based position of the first row shown (0 when none is)."""
        return self.offset + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.offset + len(self.rows)

    @property
    def previous_offset(self) -> int | None:
        if self.offset <= 0:
            return None
        # Past the end (an old link, rows gone since): back to the last page that has rows.
        last_page = (max(self.total, 1) - 1) // self.limit * self.limit
        return max(0, min(self.offset - self.limit, last_page))

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None


@dataclasses.dataclass(frozen=True, slots=True)
class TargetView:
    summary: TargetSummary
    observations: list[dict[str, Any]]
    explanation: dict[str, Any]


class ScopedTargets:
    def __init__(self, reader: TargetReader, audit: AuditLog) -> None:
        self._reader = reader
        self._audit = audit

    def _store(self) -> TargetReader:
        return self._reader

    def ranked(
        self,
        actor: Actor,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        state: str | None = None,
        limit: int = MAX_LISTED,
        offset: int = 0,
    ) -> TargetPage:
        """One page of the targets in the actor's scope, by score; `state` as in
        `TargetStore.ranked` (None: any). The database counts, sorts and cuts the page."""
        limit = max(1, min(limit, MAX_LISTED))
        offset = max(0, min(offset, MAX_OFFSET))
        scope = actor.principal.scope
        rows: list[TargetSummary] = []
        total = 0
        # An empty scope (auditor, admin) reads nothing: the store is not even asked, so that
        # `units=()` can never be mistaken for "no filter".
        if scope.units is None or scope.units:
            store = self._store()
            filters: dict[str, Any] = {
                "jurisdiction": jurisdiction,
                "unit": unit,
                "units": scope.units,
                "state": state,
            }
            total = store.count_ranked(**filters)
            if offset < total:
                rows = list(store.ranked(**filters, limit=limit, offset=offset))[:limit]
        _check(scope, rows)
        actor.audit(
            self._audit,
            "target.list",
            None,
            {
                "filters": {"jurisdiction": jurisdiction, "unit": unit, "state": state},
                "offset": offset,
                "limit": limit,
                "total": total,
                "count": len(rows),
                "targets": [r.id for r in rows],
            },
        )
        return TargetPage(rows, total, offset, limit)

    def get(self, actor: Actor, target_id: int) -> TargetSummary:
        summary = self._find(actor, target_id)
        actor.audit(self._audit, "target.view", f"target:{target_id}", {"label": summary.label})
        return summary

    def view(self, actor: Actor, target_id: int) -> TargetView:
        """The target, its observations and the explanation of its links and score."""
        store = self._store()
        summary = self._find(actor, target_id)
        observations = [plain(o) for o in store.observations(target_id)]
        explanation = plain(store.explain(target_id))
        actor.audit(
            self._audit,
            "target.view",
            f"target:{target_id}",
            {"label": summary.label, "observations": len(observations)},
        )
        return TargetView(summary, observations, explanation)

    def observations(self, actor: Actor, target_id: int) -> list[dict[str, Any]]:
        summary = self._find(actor, target_id)
        rows = [plain(o) for o in self._store().observations(target_id)]
        actor.audit(
            self._audit,
            "target.observations",
            f"target:{target_id}",
            {"label": summary.label, "observations": len(rows)},
        )
        return rows

    def _find(self, actor: Actor, target_id: int) -> TargetSummary:
        store = self._store()
        scope = actor.principal.scope
        summary: TargetSummary | None
        try:
            summary = store.get(target_id)
        except (LookupError, LeadError, InputError):
            # TargetStore.get names a missing target with an InputError.
            summary = None
        if summary is None or not visible(scope, summary):
            # Denied and missing look the same to the reader; the audit log tells them apart.
            outcome = "missing" if summary is None else "outside-scope"
            actor.audit(self._audit, "target.denied", f"target:{target_id}", {"reason": outcome})
            raise TargetNotFoundError(target_id)
        return summary


def visible(scope: Scope, target: TargetSummary) -> bool:
    """The one scope rule for a target: its routed unit, or the unit that holds its lead after a
    claim or transfer (deconfliction: the holder must read what it holds)."""
    return scope.allows(target.unit) or (
        target.holder_unit is not None and scope.allows(target.holder_unit)
    )


def _check(scope: Scope, rows: Sequence[TargetSummary]) -> None:
    leaked = [r.id for r in rows if not visible(scope, r)]
    if leaked:
        raise ScopeViolationError(
            f"the targets store returned {len(leaked)} target(s) outside the scope "
            f"({scope.describe()}); nothing was shown"
        )


def plain(value: object) -> Any:
    """A JSON-ready copy of store values (dataclasses, tuples, frozensets, enums, bytes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(plain(v) for v in value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value
