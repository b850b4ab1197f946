"""The auditor page and /api/v1/audit/verify check the chain incrementally; in full on request.

Each app remembers the head of its last passing check and verifies only the entries after it,
after confirming that head entry unchanged. A full check (`?full=1`, `full=true`) re-reads
everything and is shown with its time. What each mode catches is tested by changing the table as
a database owner could (triggers dropped), before and after the remembered head.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, text

from peerwatch.audit.entry import GENESIS_LINK
from peerwatch.audit.log import AuditLog
from tests.web.conftest import Site


def _bypass(engine: Engine, *statements: str) -> None:
    """Change the audit table as its owner could, past the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            for sql in statements:
                conn.execute(text(sql))
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
            for sql in statements:
                conn.execute(text(sql))


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(actor="t", action="target.view", obj=f"target:{i}", detail={"i": i})


def _status(page_html: str) -> str:
    found = re.search(r'<p class="(?:ok|error)" id="chain-status">(.*?)</p>', page_html, re.S)
    assert found is not None, page_html
    return " ".join(found[1].split())


def test_loads_check_only_what_is_new(site: Site) -> None:
    log = site.app.audit
    _fill(log, 300)
    client = site.signed_in("auditor")
    first = client.get("/audit")
    assert first.status_code == 200
    head = log.head()[0]
    # A fresh app has verified nothing: its first check reads the whole chain.
    assert _status(first.text).startswith(f"The chain verifies in full: {head} entries")
    assert "Last full verification: " in first.text and "passed" in first.text
    site.clock.advance(60_000)
    _fill(log, 5)
    second = client.get("/audit")
    # The five new entries and this load's own audit entry, after the head checked before.
    assert _status(second.text).startswith(f"The chain verifies: 6 new entries after entry {head}")
    # The full check is still the first one, with its time.
    last_full = r"Last full verification: 2025-11-24T16:00:00\.000Z,\s+"
    assert re.search(last_full + str(head), second.text)
    full = client.get("/audit?full=1")
    assert _status(full.text).startswith(f"The chain verifies in full: {log.head()[0]} entries")
    assert "Last full verification: 2025-11-24T16:01:00.000Z" in full.text
    assert 'id="verify-all"' in full.text
    # Reading the page is audited, with the mode asked for.
    entry = log.latest(1)[0]
    assert entry.action == "audit.view" and entry.detail == {"limit": 200, "full": True}


def test_the_api_checks_incrementally_and_in_full(site: Site) -> None:
    log = site.app.audit
    _fill(log, 50)
    client = site.signed_in("auditor")
    first = client.get("/api/v1/audit/verify").json()
    assert first["ok"] and first["full"] and first["since_seq"] == 0
    # Everything up to the call; its own audit entry ("audit.verify") follows.
    assert first["checked"] == first["head_seq"] == log.head()[0] - 1
    assert first["last_full"]["checked"] == first["checked"]
    _fill(log, 3)
    second = client.get("/api/v1/audit/verify").json()
    # The three entries and the audit entry of the first call.
    assert second["ok"] and not second["full"] and second["checked"] == 4
    assert second["since_seq"] == first["head_seq"]
    assert second["last_full"] == first["last_full"]
    everything = client.get("/api/v1/audit/verify?full=true").json()
    assert everything["full"] and everything["checked"] == everything["head_seq"]
    assert everything["head_seq"] == log.head()[0] - 1
    links = {e.seq: e.link.hex() for e in log.iter_entries()}
    assert everything["head_link"] == links[everything["head_seq"]]
    assert everything["last_full"]["checked"] == everything["checked"]


def test_a_change_after_the_checked_head_is_found_on_the_next_load(site: Site) -> None:
    log = site.app.audit
    _fill(log, 20)
    client = site.signed_in("auditor")
    assert client.get("/api/v1/audit/verify").json()["ok"]
    _fill(log, 5)
    victim = log.head()[0] - 2
    _bypass(
        site.app.engine,
        "UPDATE audit_log SET actor = 'someone' WHERE seq = (SELECT max(seq) - 2 FROM audit_log)",
    )
    page = client.get("/audit")
    assert "does NOT verify" in page.text and f"audit entry {victim}:" in page.text
    # Only a passing check moves the head: the problem stays on every load.
    again = client.get("/api/v1/audit/verify").json()
    assert not again["ok"] and [p["seq"] for p in again["problems"]] == [victim]


def test_a_change_before_the_head_needs_the_full_check(site: Site) -> None:
    log = site.app.audit
    _fill(log, 20)
    client = site.signed_in("auditor")
    assert client.get("/api/v1/audit/verify").json()["ok"]
    _bypass(site.app.engine, "UPDATE audit_log SET actor = 'someone' WHERE seq = 3")
    # The incremental check does not re-read what it verified (the documented trade-off)...
    assert client.get("/api/v1/audit/verify").json()["ok"]
    # ... the full check does, and so does `peerwatch audit verify` (AuditLog.verify()).
    full = client.get("/api/v1/audit/verify?full=true").json()
    assert not full["ok"] and full["problems"][0]["seq"] == 3
    assert not full["last_full"]["ok"]
    assert "FAILED" in client.get("/audit").text
    assert [p.seq for p in log.verify().problems] == [3]


@pytest.mark.parametrize(
    ("change", "kinds"),
    [
        ("UPDATE audit_log SET actor = 'someone' WHERE seq = {head}", ["chain", "anchor"]),
        ("UPDATE audit_log SET link = X'00' WHERE seq = {head}", ["chain", "anchor"]),
        ("DELETE FROM audit_log WHERE seq >= {head}", ["anchor"]),
    ],
)
def test_the_checked_head_itself_is_confirmed(site: Site, change: str, kinds: list[str]) -> None:
    """Changing the remembered head entry, or truncating the log below it, is caught without a
    full check being asked for: the head must still be there, chained, with the same link."""
    log = site.app.audit
    _fill(log, 20)
    client = site.signed_in("auditor")
    head = client.get("/api/v1/audit/verify").json()["head_seq"]
    sql = change.replace("{head}", str(head))
    if site.app.engine.dialect.name == "postgresql":
        sql = sql.replace("X'00'", "'\\x00'::bytea")
    _bypass(site.app.engine, sql)
    report = client.get("/api/v1/audit/verify").json()
    assert not report["ok"] and not report["full"]
    at_head = [p for p in report["problems"] if p["seq"] == head]
    assert sorted(p["kind"] for p in at_head) == sorted(kinds), report["problems"]
    (anchor,) = [p for p in at_head if p["kind"] == "anchor"]
    assert "the entry verified earlier" in anchor["message"]


def test_verify_since_reads_only_the_new_entries(engine: Engine) -> None:
    log = AuditLog(engine)
    _fill(log, 30)
    full = log.verify()
    assert full.ok and full.checked == 30
    _fill(log, 4)
    since = log.verify(since=(full.head_seq, full.head_link))
    assert since.ok and since.checked == 4 and since.head_seq == 34
    assert since.head_link == log.head()[1]
    # Nothing new: nothing read, the head stays.
    same = log.verify(since=log.head())
    assert same.ok and same.checked == 0 and (same.head_seq, same.head_link) == log.head()
    # `since` at the start is the full check; a wrong link for the head is a problem.
    assert log.verify(since=(0, GENESIS_LINK)).checked == 34
    wrong = log.verify(since=(30, b"\x00" * 32))
    assert [(p.seq, p.kind) for p in wrong.problems] == [(30, "anchor")]
    assert wrong.checked == 34  # the head not being what was verified: all is checked
    # An anchor inside the part verified earlier makes it a full check that compares it.
    entries = {e.seq: e.link for e in log.iter_entries()}
    anchored = log.verify(since=(30, entries[30]), anchor=(10, entries[10]))
    assert anchored.ok and anchored.checked == 34
    bad_anchor = log.verify(since=(30, entries[30]), anchor=(10, entries[11]))
    assert [p.kind for p in bad_anchor.problems] == ["anchor"]
