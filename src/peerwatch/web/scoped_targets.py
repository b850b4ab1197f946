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
from typing import Any, Protocol

from peerwatch.accounts.role import Principal, Scope
from peerwatch.audit.log import AuditLog
from peerwatch.errors import InputError, PeerwatchError
from peerwatch.leads.targets import TargetSummary
from peerwatch.leads.workflow import LeadError

MAX_LISTED = 500  # targets per list page or API answer


class TargetReader(Protocol):
    """What the web app needs of `peerwatch.leads.targets.TargetStore`."""

    def ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
    ) -> Sequence[TargetSummary]: ...

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

    def audit(self, log: AuditLog, action: str, obj: str | None, detail: dict[str, Any]) -> None:
        log.append(
            actor=self.principal.name,
            role=self.principal.role.value,
            unit=self.principal.unit,
            address=self.address,
            action=action,
            obj=obj,
            detail=detail,
        )


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
        limit: int = MAX_LISTED,
    ) -> list[TargetSummary]:
        scope = actor.principal.scope
        rows: list[TargetSummary] = []
        # An empty scope (auditor, admin) reads nothing: the store is not even asked, so that
        # `units=()` can never be mistaken for "no filter".
        if scope.units is None or scope.units:
            found = self._store().ranked(jurisdiction=jurisdiction, unit=unit, units=scope.units)
            rows = list(found[:limit])
        _check(scope, rows)
        actor.audit(
            self._audit,
            "target.list",
            None,
            {
                "filters": {"jurisdiction": jurisdiction, "unit": unit},
                "count": len(rows),
                "targets": [r.id for r in rows],
            },
        )
        return rows

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
