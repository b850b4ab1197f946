"""Appending to, reading and verifying the audit log (table `audit_log`).

Appends are one transaction each and take the next sequence number under the table's primary key:
two writers racing for the same number make one of them re-read the head and try again, so the
chain never forks. The database refuses UPDATE and DELETE (migration 0005 triggers); the chain
catches whoever gets around that (a database owner can drop a trigger).
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from peerwatch.audit.entry import (
    GENESIS_LINK,
    AuditEntry,
    AuditError,
    DetailValue,
    check_detail,
    detail_text,
    parse_detail,
)
from peerwatch.storage.database import writer
from peerwatch.storage.schema import audit_log


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def local_actor() -> str:
    """The actor of an entry written by a command-line user: "cli:<OS user name>"."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (containers)
        return "cli:unknown"


@dataclass(frozen=True, slots=True)
class AuditProblem:
    seq: int
    kind: str  # "missing", "unreadable", "chain", "anchor"
    message: str

    def __str__(self) -> str:
        return f"audit entry {self.seq}: {self.message}"


@dataclass
class AuditReport:
    checked: int = 0
    head_seq: int = 0
    head_link: bytes = GENESIS_LINK
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> AuditProblem | None:
        return self.problems[0] if self.problems else None


class AuditLog:
    def __init__(self, engine: Engine, clock_ms: Callable[[], int] = now_ms) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._clock_ms = clock_ms

    def now_ms(self) -> int:
        """The log's clock: the time an entry appended now would carry (the web app shows when
        the chain was last fully verified in that time)."""
        return self._clock_ms()

    def append(
        self,
        *,
        actor: str,
        action: str,
        role: str | None = None,
        unit: str | None = None,
        address: str | None = None,
        obj: str | None = None,  # what it was done to: "target:42", "user:alice"
        detail: Mapping[str, DetailValue] | None = None,
    ) -> AuditEntry:
        """Write one entry; return it (with its sequence number and link) once committed."""
        detail = dict(detail or {})
        check_detail(detail)
        if not actor or not action:
            raise AuditError("an audit entry needs an actor and an action")
        for attempt in range(5):
            try:
                return self._append_once(actor, action, role, unit, address, obj, detail)
            except IntegrityError:
                # Another writer took this sequence number: re-read the head and chain after it.
                if attempt == 4:
                    raise AuditError(
                        "could not append to the audit log: other writers keep taking the "
                        "same sequence number"
                    ) from None
        raise AssertionError("unreachable")

    def _append_once(
        self,
        actor: str,
        action: str,
        role: str | None,
        unit: str | None,
        address: str | None,
        obj: str | None,
        detail: dict[str, DetailValue],
    ) -> AuditEntry:
        c = audit_log.c
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One appender at a time (SQLite's BEGIN IMMEDIATE already is); readers go on.
                # SHARE ROW EXCLUSIVE conflicts with itself and with inserts, not with SELECT.
                conn.exec_driver_sql("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")
            head = conn.execute(select(c.seq, c.link).order_by(c.seq.desc()).limit(1)).first()
            seq, prev = (0, GENESIS_LINK) if head is None else (int(head[0]), _blob(head[1]))
            entry = AuditEntry(
                seq=seq + 1,
                at_ms=self._clock_ms(),
                actor=actor,
                role=role,
                unit=unit,
                address=address,
                action=action,
                object=obj,
                detail=detail,
            )
            link = entry.next_link(prev)
            conn.execute(
                insert(audit_log).values(
                    seq=entry.seq,
                    at_ms=entry.at_ms,
                    actor=actor,
                    role=role,
                    unit=unit,
                    address=address,
                    action=action,
                    object=obj,
                    detail=detail_text(detail),
                    link=link,
                )
            )
        return AuditEntry(
            entry.seq, entry.at_ms, actor, role, unit, address, action, obj, detail, link
        )

    def latest(self, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first. Rows whose detail no longer parses are shown with the raw
        text under "unreadable" (verify reports them)."""
        c = audit_log.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(c.seq.desc()).limit(limit)).all()
        return [_entry(r)[0] for r in rows]

    def head(self) -> tuple[int, bytes]:
        """The last sequence number and its link (0 and the genesis link when empty)."""
        c = audit_log.c
        with self._engine.connect() as conn:
            row = conn.execute(select(c.seq, c.link).order_by(c.seq.desc()).limit(1)).first()
        return (0, GENESIS_LINK) if row is None else (int(row[0]), _blob(row[1]))

    def iter_entries(self, *, batch: int = 5000) -> Iterator[AuditEntry]:
        """Every entry in sequence order, streamed."""
        for entry, _ok in self._iter_rows(batch):
            yield entry

    def _iter_rows(
        self, batch: int, after: int = 0
    ) -> Generator[tuple[AuditEntry, bool], None, None]:
        query = select(audit_log).order_by(audit_log.c.seq)
        if after:
            query = query.where(audit_log.c.seq > after)
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for row in result:
                yield _entry(row)

    def verify(
        self,
        *,
        anchor: tuple[int, bytes] | None = None,
        since: tuple[int, bytes] | None = None,
    ) -> AuditReport:
        """Check every entry against the chain; problems in sequence order, the first one is the
        entry that was changed, removed or moved.

        Each entry's link is recomputed from the *stored* link before it, so an edited entry is
        reported alone rather than with every entry after it. `anchor` is a (seq, link) pair noted
        earlier (printed by `audit show` and `audit verify`): it proves that entries up to there
        were not removed from the end and that the whole chain was not rebuilt.

        `since` is the head (seq, link) of an earlier verification that passed: only the entries
        after it are checked (`checked` counts them), chained from its link, once its own entry
        is confirmed still there, unchanged, with that link (it and the entry before it are read).
        Should it not be, the whole chain is checked instead and the report says so, which
        catches a rewrite that reached the head and a truncation below it. Other entries before
        the head are not re-read, so a change there shows only in a full check: the web app's
        auditor page checks incrementally on each load and fully on request; `peerwatch audit
        verify` always checks fully.
        """
        start, start_link = 0, GENESIS_LINK
        # An anchor inside the part verified earlier was not compared then: check all.
        if since is not None and (anchor is None or anchor[0] > since[0]):
            start, start_link = since
        if start > 0:
            found = self._link_if_intact(start)
            if found != start_link:
                # The entry verified earlier was changed, moved or removed: check everything, so
                # that the report names what happened, and say that the earlier head is gone.
                report = self.verify(anchor=anchor)
                what = "is gone or no longer chains" if found is None else "has another link"
                report.problems.append(
                    AuditProblem(
                        start,
                        "anchor",
                        f"the entry verified earlier {what}: the log was changed, rewritten or "
                        "truncated since",
                    )
                )
                report.problems.sort(key=lambda p: p.seq)
                return report
        report = AuditReport(head_seq=start, head_link=start_link)
        with closing(self._iter_rows(5000, after=start)) as rows:
            self._check(rows, report, start_link, start + 1, anchor)
        return report

    def _link_if_intact(self, seq: int) -> bytes | None:
        """The link of entry `seq` if it is there, readable and chains from the entry before it
        (two rows read); None otherwise."""
        c = audit_log.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(audit_log).where(c.seq.in_([seq - 1, seq])).order_by(c.seq)
            ).all()
        entries = [_entry(r) for r in rows]
        prev = GENESIS_LINK if seq == 1 else None
        for entry, readable in entries:
            if entry.seq == seq - 1 and readable:
                prev = entry.link
            elif entry.seq == seq and readable and prev is not None:
                return entry.link if entry.next_link(prev) == entry.link else None
        return None

    @staticmethod
    def _check(
        rows: Iterator[tuple[AuditEntry, bool]],
        report: AuditReport,
        prev_link: bytes,
        expected: int,
        anchor: tuple[int, bytes] | None,
    ) -> None:
        anchor_seen = False
        for entry, readable in rows:
            seq = entry.seq if entry.seq > 0 else expected  # an unreadable seq: where it sits
            if seq != expected:
                first_gap, last = expected, seq - 1
                gap = f"entry {first_gap}" if first_gap == last else f"entries {first_gap}..{last}"
                report.problems.append(
                    AuditProblem(first_gap, "missing", f"{gap} missing (deleted)")
                )
            if not readable:
                report.problems.append(
                    AuditProblem(
                        seq,
                        "unreadable",
                        "a column holds what no entry can (edited)",
                    )
                )
            elif entry.next_link(prev_link) != entry.link:
                report.problems.append(
                    AuditProblem(
                        entry.seq,
                        "chain",
                        "does not match its link: changed, or moved from another place",
                    )
                )
            if anchor is not None and entry.seq == anchor[0]:
                anchor_seen = True
                if entry.link != anchor[1]:
                    report.problems.append(
                        AuditProblem(
                            entry.seq,
                            "anchor",
                            f"link {entry.link.hex()} differs from the anchor {anchor[1].hex()}: "
                            "the chain was rewritten",
                        )
                    )
            prev_link = entry.link
            expected = seq + 1
            report.checked += 1
            report.head_seq, report.head_link = seq, entry.link
        if anchor is not None and not anchor_seen:
            report.problems.append(
                AuditProblem(
                    anchor[0],
                    "anchor",
                    f"the anchor's entry is gone: the log ends at {report.head_seq} (truncated)",
                )
            )
        report.problems.sort(key=lambda p: p.seq)


def _blob(value: object) -> bytes:
    """Column bytes as stored. SQLite lets an edit turn a BLOB into TEXT; verification reports
    such a row instead of crashing on it."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return repr(value).encode("utf-8")


def _entry(row: Row[tuple[object, ...]]) -> tuple[AuditEntry, bool]:
    """The entry a row holds, and whether it could be read as stored. SQLite keeps whatever an
    edit puts in a column (text in an integer column): such a row is reported, not raised."""
    m = row._mapping
    readable = True
    try:
        detail = parse_detail(str(m["detail"]))
    except ValueError:
        detail, readable = {"unreadable": str(m["detail"])}, False
    numbers: list[int] = []
    for name in ("seq", "at_ms"):
        value = m[name]
        if isinstance(value, int) and not isinstance(value, bool):
            numbers.append(value)
        else:
            numbers.append(-1)
            readable = False
    entry = AuditEntry(
        seq=numbers[0],
        at_ms=numbers[1],
        actor=str(m["actor"]),
        role=_opt(m["role"]),
        unit=_opt(m["unit"]),
        address=_opt(m["address"]),
        action=str(m["action"]),
        object=_opt(m["object"]),
        detail=detail,
        link=_blob(m["link"]),
    )
    return entry, readable


def _opt(value: object) -> str | None:
    return None if value is None else str(value)
