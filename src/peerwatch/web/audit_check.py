"""The auditor page's chain check: incremental on every load, in full on request.

Verifying the whole audit chain reads every entry, and every page view adds one, so checking it
all on each load of the auditor page grows without bound. Each web app instead remembers the head
(seq, link) of its last check that passed and, on the next load, checks only the entries after
it, chained from that link, after confirming that the head entry is still there unchanged
(`AuditLog.verify(since=)`). An entry changed *before* that head is only caught by a full check:
the page offers one ("verify everything", `?full=1`) and shows when the last one ran and what it
found. The memory is per process: a fresh process starts with a full check, so every process has
verified the whole chain once. `peerwatch audit verify` always checks in full.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from peerwatch.audit.log import AuditLog, AuditReport


@dataclass(frozen=True, slots=True)
class FullCheck:
    at_ms: int  # the audit log's clock when it ran
    ok: bool
    checked: int  # entries read
    head_seq: int


@dataclass(frozen=True, slots=True)
class ChainStatus:
    report: AuditReport  # this check's findings; `checked` counts the entries it read
    full: bool  # this check read the whole chain
    since_seq: int  # entries after this one were checked (0: from the first)
    last_full: FullCheck | None  # the last full check of this process


class AuditChainCheck:
    """The verified head of one web app, and the checks that move it forward."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._lock = threading.Lock()  # routes run in a thread pool
        self._head: tuple[int, bytes] | None = None  # of the last check that passed
        self._last_full: FullCheck | None = None

    def check(self, *, full: bool = False) -> ChainStatus:
        with self._lock:
            since = None if full else self._head
            report = self._audit.verify(since=since)
            if since is None:
                self._last_full = FullCheck(
                    at_ms=self._audit.now_ms(),
                    ok=report.ok,
                    checked=report.checked,
                    head_seq=report.head_seq,
                )
            # Only a passing check moves the head: after a failure the next load checks again
            # from the last good head and reports the same problem, until someone looks.
            if report.ok:
                self._head = (report.head_seq, report.head_link)
            elif since is None:
                self._head = None
            return ChainStatus(
                report=report,
                full=since is None,
                since_seq=0 if since is None else since[0],
                last_full=self._last_full,
            )
