"""The lead state machine and deconfliction: who holds a target, since when, and every change.

A lead is a target seen from the investigators' side. Its states and the moves between them are
the one table `TRANSITIONS` below (house rule 3; docs/operations.md draws it):

    new --claim--> claimed --state--> in-investigation --state--> requisition-sent --state--> closed
    claimed / in-investigation --release--> new
    claimed / in-investigation --transfer--> claimed (by another unit)
    claimed / in-investigation / requisition-sent --state--> closed (with an outcome)
    requisition-sent --state--> in-investigation (the provider answered; the work goes on)

One unit holds a lead at a time, and the database enforces it: the current state is one row per
target (`lead_states`, primary key target_id), the first claim inserts it (a second concurrent
insert fails on the key) and every later change is a compare-and-set on the row's version (a
second concurrent update matches no row). Either way exactly one writer wins; the other gets a
`ClaimConflictError` naming the holder. Every change is appended to `lead_history` in the same
transaction, which the database keeps append-only (triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from peerwatch.errors import PeerwatchError
from peerwatch.storage.database import writer
from peerwatch.storage.schema import lead_history, lead_states


class LeadError(PeerwatchError):
    """A lead change was refused: illegal transition, wrong unit, unknown unit or outcome."""

    exit_code = 6


class ClaimConflictError(LeadError):
    """Another unit holds the target (or took it a moment earlier)."""


class LeadState(enum.StrEnum):
    NEW = "new"
    CLAIMED = "claimed"
    IN_INVESTIGATION = "in-investigation"
    REQUISITION_SENT = "requisition-sent"
    CLOSED = "closed"


class Action(enum.StrEnum):
    CLAIM = "claim"
    RELEASE = "release"
    TRANSFER = "transfer"
    STATE = "state"  # a move along the investigation: start, requisition sent, close


@dataclass(frozen=True, slots=True)
class Transition:
    action: Action
    source: LeadState
    target: LeadState


_S = LeadState
#: Every legal move. Anything not here is refused with the moves that are legal from that state.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(Action.CLAIM, _S.NEW, _S.CLAIMED),
    Transition(Action.RELEASE, _S.CLAIMED, _S.NEW),
    Transition(Action.RELEASE, _S.IN_INVESTIGATION, _S.NEW),
    Transition(Action.TRANSFER, _S.CLAIMED, _S.CLAIMED),
    Transition(Action.TRANSFER, _S.IN_INVESTIGATION, _S.CLAIMED),
    Transition(Action.STATE, _S.CLAIMED, _S.IN_INVESTIGATION),
    Transition(Action.STATE, _S.IN_INVESTIGATION, _S.REQUISITION_SENT),
    Transition(Action.STATE, _S.REQUISITION_SENT, _S.IN_INVESTIGATION),
    Transition(Action.STATE, _S.CLAIMED, _S.CLOSED),
    Transition(Action.STATE, _S.IN_INVESTIGATION, _S.CLOSED),
    Transition(Action.STATE, _S.REQUISITION_SENT, _S.CLOSED),
)

#: How a closed lead ended. A closed lead carries exactly one; no other state carries one.
OUTCOMES: tuple[str, ...] = (
    "identified",  # a subscriber or person was identified and the case goes on outside peerwatch
    "not-identified",  # the provider's answer or the inquiry identified nobody
    "no-offence",  # checked: nothing unlawful
    "isp-no-data",  # the provider kept no data for that time (or CGNAT, no port)
    "duplicate",  # already covered by another case
    "other",  # see the note
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int | None) -> str | None:
    """UTC ISO 8601 to the second with Z, the form every JSON output of the leads uses."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Lead:
    target_id: int
    state: LeadState
    unit: str | None  # holding unit code, None when nobody holds it
    holder: str | None  # the user who claimed it (or received the transfer)
    since_ms: int | None  # when the holding unit took it
    outcome: str | None
    updated_ms: int | None
    version: int  # 0: no row yet (a new lead nobody has touched)

    def as_json(self) -> dict[str, object]:
        return {
            "target_id": self.target_id,
            "state": self.state.value,
            "unit": self.unit,
            "holder": self.holder,
            "since": iso_ms(self.since_ms),
            "outcome": self.outcome,
            "updated": iso_ms(self.updated_ms),
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    target_id: int
    at_ms: int
    actor: str
    unit: str | None
    action: str
    from_state: str
    to_state: str
    from_unit: str | None
    to_unit: str | None
    outcome: str | None
    note: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "target_id": self.target_id,
            "at": iso_ms(self.at_ms),
            "at_ms": self.at_ms,
            "actor": self.actor,
            "unit": self.unit,
            "action": self.action,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "from_unit": self.from_unit,
            "to_unit": self.to_unit,
            "outcome": self.outcome,
            "note": self.note,
        }


@dataclass(frozen=True)
class WorkflowConfig:
    # Is this a unit code we know (the units imported by `peerwatch units import`)? None: any.
    unit_exists: Callable[[str], bool] | None = None
    # Does this target exist? None: any integer id is accepted.
    target_exists: Callable[[int], bool] | None = None


class LeadWorkflow:
    """Claims, releases, transfers and state changes of leads, each one transaction."""

    def __init__(
        self,
        engine: Engine,
        config: WorkflowConfig | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._config = config or WorkflowConfig()
        self._clock_ms = clock_ms

    # --- reading ---

    def get(self, target_id: int) -> Lead:
        with self._engine.connect() as conn:
            return _read(conn, target_id)

    def leads(self, *, unit: str | None = None) -> list[Lead]:
        """Leads that have left `new` at least once (or came back to it), by target id."""
        query = select(lead_states).order_by(lead_states.c.target_id)
        if unit is not None:
            query = query.where(lead_states.c.unit == unit)
        with self._engine.connect() as conn:
            return [_lead(row) for row in conn.execute(query)]

    def history(self, target_id: int) -> list[HistoryEntry]:
        h = lead_history.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(lead_history).where(h.target_id == target_id).order_by(h.id)
            ).all()
        return [
            HistoryEntry(
                id=int(r.id),
                target_id=int(r.target_id),
                at_ms=int(r.at_ms),
                actor=r.actor,
                unit=r.unit,
                action=r.action,
                from_state=r.from_state,
                to_state=r.to_state,
                from_unit=r.from_unit,
                to_unit=r.to_unit,
                outcome=r.outcome,
                note=r.note,
            )
            for r in rows
        ]

    # --- changing ---

    def claim(self, target_id: int, *, unit: str, actor: str, note: str | None = None) -> Lead:
        self._check_unit(unit)
        return self._change(target_id, Action.CLAIM, actor=actor, unit=unit, note=note)

    def release(
        self, target_id: int, *, actor: str, unit: str | None = None, note: str | None = None
    ) -> Lead:
        """Give the lead back (state new, nobody holds it). `unit`, when given, must hold it."""
        return self._change(target_id, Action.RELEASE, actor=actor, unit=unit, note=note)

    def transfer(
        self,
        target_id: int,
        *,
        to_unit: str,
        actor: str,
        unit: str | None = None,
        note: str | None = None,
    ) -> Lead:
        """Hand the lead to another unit, which holds it (claimed) from now on."""
        self._check_unit(to_unit)
        return self._change(
            target_id, Action.TRANSFER, actor=actor, unit=unit, to_unit=to_unit, note=note
        )

    def set_state(
        self,
        target_id: int,
        state: LeadState | str,
        *,
        actor: str,
        unit: str | None = None,
        outcome: str | None = None,
        note: str | None = None,
    ) -> Lead:
        """Move along the investigation (in-investigation, requisition-sent, closed + outcome)."""
        try:
            to_state = LeadState(state)
        except ValueError:
            names = ", ".join(s.value for s in LeadState)
            raise LeadError(f"unknown lead state {state!r} (states: {names})") from None
        if to_state is LeadState.CLOSED:
            if outcome is None:
                raise LeadError(
                    f"closing target {target_id} needs an outcome: {', '.join(OUTCOMES)}"
                )
            if outcome not in OUTCOMES:
                raise LeadError(f"unknown outcome {outcome!r} (outcomes: {', '.join(OUTCOMES)})")
        elif outcome is not None:
            raise LeadError(f"an outcome is only given when closing, not for state {to_state}")
        return self._change(
            target_id,
            Action.STATE,
            actor=actor,
            unit=unit,
            to_state=to_state,
            outcome=outcome,
            note=note,
        )

    def _check_unit(self, unit: str) -> None:
        if not unit:
            raise LeadError("a unit code is needed")
        check = self._config.unit_exists
        if check is not None and not check(unit):
            raise LeadError(f"unknown unit {unit!r} (import units with `peerwatch units import`)")

    def _change(
        self,
        target_id: int,
        action: Action,
        *,
        actor: str,
        unit: str | None,
        to_unit: str | None = None,
        to_state: LeadState | None = None,
        outcome: str | None = None,
        note: str | None = None,
    ) -> Lead:
        if not actor.strip():
            raise LeadError("the acting user (--by) must not be empty")
        check = self._config.target_exists
        if check is not None and not check(target_id):
            raise LeadError(f"no target {target_id}")
        try:
            with self._writer.begin() as conn:
                return self._change_in(
                    conn, target_id, action, actor, unit, to_unit, to_state, outcome, note
                )
        except (IntegrityError, _StaleError):
            # Another writer's change was committed between our read and our write: the primary
            # key refused a second first row, or the row's version moved on.
            raise self._conflict(target_id) from None

    def _change_in(
        self,
        conn: Connection,
        target_id: int,
        action: Action,
        actor: str,
        unit: str | None,
        to_unit: str | None,
        to_state: LeadState | None,
        outcome: str | None,
        note: str | None,
    ) -> Lead:
        cur = _read(conn, target_id)
        move = _find(action, cur, to_state)
        at = self._clock_ms()
        if action is Action.CLAIM:
            new_unit: str | None = unit
            holder: str | None = actor
            since: int | None = at
        elif action is Action.RELEASE:
            _check_holder(cur, unit, "release")
            new_unit, holder, since = None, None, None
        elif action is Action.TRANSFER:
            _check_holder(cur, unit, "transfer")
            if to_unit == cur.unit:
                raise LeadError(f"target {target_id} is already held by unit {to_unit}")
            new_unit, holder, since = to_unit, actor, at
        else:
            _check_holder(cur, unit, "change the state of")
            new_unit, holder, since = cur.unit, cur.holder, cur.since_ms
        values = {
            "state": move.target.value,
            "unit": new_unit,
            "holder": holder,
            "since_ms": since,
            "outcome": outcome,
            "updated_ms": at,
            "version": cur.version + 1,
        }
        if cur.version == 0:
            conn.execute(insert(lead_states).values(target_id=target_id, **values))
        else:
            done = conn.execute(
                update(lead_states)
                .where(
                    and_(
                        lead_states.c.target_id == target_id,
                        lead_states.c.version == cur.version,
                    )
                )
                .values(**values)
            )
            if done.rowcount != 1:
                # PostgreSQL: a concurrent change committed first; our row version is stale.
                raise _StaleError
        conn.execute(
            insert(lead_history).values(
                target_id=target_id,
                at_ms=at,
                actor=actor,
                unit=unit if unit is not None else cur.unit,
                action=action.value,
                from_state=cur.state.value,
                to_state=move.target.value,
                from_unit=cur.unit,
                to_unit=new_unit,
                outcome=outcome,
                note=note,
            )
        )
        return Lead(target_id, move.target, new_unit, holder, since, outcome, at, cur.version + 1)

    def _conflict(self, target_id: int) -> LeadError:
        lead = self.get(target_id)
        if lead.version == 0:
            # Nothing was written by anyone: the database refused the row itself (no such target).
            return LeadError(f"no target {target_id}")
        return ClaimConflictError(_held_message(lead, "another unit changed it first"))


class _StaleError(Exception):
    """Raised inside the transaction to roll it back; reported as a ClaimConflictError."""


def _held_message(lead: Lead, why: str) -> str:
    if lead.unit is None:
        return f"target {lead.target_id}: {why}; it is now {lead.state.value}"
    return (
        f"target {lead.target_id} is held by unit {lead.unit} since {iso_ms(lead.since_ms)} "
        f"(claimed by {lead.holder}, state {lead.state.value}); {why}"
    )


def _check_holder(cur: Lead, unit: str | None, what: str) -> None:
    if unit is not None and cur.unit != unit:
        raise ClaimConflictError(_held_message(cur, f"unit {unit} cannot {what} it"))


def _find(action: Action, cur: Lead, to_state: LeadState | None) -> Transition:
    for t in TRANSITIONS:
        if t.action is action and t.source is cur.state and (to_state in (None, t.target)):
            return t
    if action is Action.CLAIM and cur.unit is not None and cur.state is not LeadState.CLOSED:
        raise ClaimConflictError(_held_message(cur, "release or transfer it first"))
    legal = sorted(
        f"{t.action.value} -> {t.target.value}" for t in TRANSITIONS if t.source is cur.state
    )
    wanted = action.value if to_state is None else f"{action.value} -> {to_state.value}"
    return _refuse(cur, wanted, legal)


def _refuse(cur: Lead, wanted: str, legal: list[str]) -> Transition:
    allowed = ", ".join(legal) if legal else "none: it is final"
    raise LeadError(
        f"target {cur.target_id} is {cur.state.value}: cannot {wanted} (allowed: {allowed})"
    )


def _read(conn: Connection, target_id: int) -> Lead:
    row = conn.execute(select(lead_states).where(lead_states.c.target_id == target_id)).first()
    if row is None:
        return Lead(target_id, LeadState.NEW, None, None, None, None, None, 0)
    return _lead(row)


def _lead(r: Row[Any]) -> Lead:
    return Lead(
        target_id=int(r.target_id),
        state=LeadState(r.state),
        unit=r.unit,
        holder=r.holder,
        since_ms=r.since_ms,
        outcome=r.outcome,
        updated_ms=r.updated_ms,
        version=int(r.version),
    )
