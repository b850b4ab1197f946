"""The lead-state filter of the list, and the map's numbers agreeing with the lists they open.

The map counts open leads (every state but closed) in the reader's scope; its link for a
jurisdiction opens `/leads?jurisdiction=XX`, whose default is the open leads: for every reader and
every jurisdiction, the number on the map is the number of rows of that list, over all its pages.
Closed, claimed, in-investigation and transferred leads are made by the real workflow.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from fastapi.testclient import TestClient

from peerwatch.errors import InputError
from peerwatch.leads.workflow import LeadState
from peerwatch.web.scoped_targets import StateFilter
from tests.web.conftest import Site
from tests.web.many_targets import add_targets
from tests.web.test_map import _configure

N = 1_200

_ROW = re.compile(r'<tr>\s*<td><a href="/leads/(\d+)">T-\d{6}</a></td>')
_TOTAL = re.compile(r'<p id="leads-count">(?:[\d,]+–[\d,]+ of )?([\d,]+)\s')
_MAP_LINK = re.compile(
    r'<a href="(/leads\?jurisdiction=[^"]+)" data-code="([^"]+)" data-open="(\d+)">'
)


class Worked:
    """What the workflow did to the generated targets (ids)."""

    def __init__(self, site: Site) -> None:
        leads = site.app.leads
        u75 = [t for t in site.targets["U75"] if t >= 10_000]
        u13 = [t for t in site.targets["U13"] if t >= 10_000]
        self.closed = u75[:30] + u13[:4]
        for tid in self.closed:
            unit = "U75" if tid in u75 else "U13"
            leads.claim(tid, unit=unit, actor="t")
            leads.set_state(tid, "closed", actor="t", outcome="duplicate")
        self.claimed = u13[10:20]
        self.investigating = self.claimed[:5]
        for tid in self.claimed:
            leads.claim(tid, unit="U13", actor="t")
        for tid in self.investigating:
            leads.set_state(tid, "in-investigation", actor="t")
        # Routed to U75 (jurisdiction 75), held by U13 after a transfer: U13 reads them too.
        self.transferred = u75[100:103]
        for tid in self.transferred:
            leads.claim(tid, unit="U75", actor="t")
            leads.transfer(tid, to_unit="U13", actor="t", unit="U75")


@pytest.fixture
def worked(site: Site, tmp_path: Path) -> Iterator[tuple[Site, Worked]]:
    for unit, ids in add_targets(site.app.engine, N).items():
        site.targets.setdefault(unit, []).extend(ids)
    _configure(site, tmp_path)
    yield site, Worked(site)


def _ids(page_html: str) -> list[int]:
    return [int(x) for x in _ROW.findall(page_html)]


def _rows_of_list(client: TestClient, url: str) -> tuple[list[int], int]:
    """Every row of the list at `url` over all its pages, and the total it announces."""
    r = client.get(url)
    assert r.status_code == 200, r.text
    match = _TOTAL.search(r.text)
    assert match is not None, r.text
    total = int(match[1].replace(",", ""))
    ids = _ids(r.text)
    while (nxt := re.search(r'<a href="([^"]+)" rel="next"', r.text)) is not None:
        r = client.get(html.unescape(nxt[1]))
        ids += _ids(r.text)
    return ids, total


@pytest.mark.parametrize("name", ["coord", "inv75", "inv13"])
def test_the_map_number_is_the_length_of_the_list_it_opens(
    worked: tuple[Site, Worked], name: str
) -> None:
    site, done = worked
    client = site.signed_in(name)
    page = client.get("/map")
    assert page.status_code == 200
    links = _MAP_LINK.findall(page.text)
    counted = {code: int(n) for _href, code, n in links}
    assert sum(counted.values()) > 0
    for href, code, n in links:
        if int(n) == 0 and code not in ("69", "2A"):
            continue  # the empty ones are alike: two of them are enough
        assert href == f"/leads?jurisdiction={code}"  # what tests/browser follow too
        ids, total = _rows_of_list(client, href)
        assert len(ids) == total == int(n), (name, code)
        assert len(set(ids)) == len(ids)
        assert not set(ids) & set(done.closed)
    # The same agreement in the API: the map's count and the open list's total.
    shown = client.get("/api/v1/map").json()["jurisdictions"]
    numbers = {j["code"]: j["open_leads"] for j in shown}
    for code in ("75", "13"):
        listed = client.get(f"/api/v1/targets?jurisdiction={code}&state=open&limit=1")
        if numbers[code] is None:
            assert listed.headers["X-Total-Count"] == "0"
        else:
            assert int(listed.headers["X-Total-Count"]) == numbers[code] == counted[code]


def test_a_held_lead_is_counted_where_its_holder_reads_it(worked: tuple[Site, Worked]) -> None:
    """inv13 holds three leads routed to U75: the map shows them in 75 and the list agrees."""
    site, done = worked
    client = site.signed_in("inv13")
    by = {j["code"]: j for j in client.get("/api/v1/map").json()["jurisdictions"]}
    assert by["75"]["open_leads"] == len(done.transferred) and by["75"]["in_scope"]
    ids, total = _rows_of_list(client, "/leads?jurisdiction=75")
    assert sorted(ids) == sorted(done.transferred) and total == len(done.transferred)
    assert by["69"]["open_leads"] is None  # still nothing of another unit


def test_each_state_lists_its_leads(worked: tuple[Site, Worked]) -> None:
    site, done = worked
    client = site.signed_in("coord")
    store = site.app.targets

    def listed(query: str) -> set[int]:
        ids: set[int] = set()
        offset = 0
        while True:
            r = client.get(f"/api/v1/targets?{query}&limit=500&offset={offset}")
            assert r.status_code == 200, r.text
            if not r.json():
                return ids
            ids |= {t["id"] for t in r.json()}
            offset += 500

    everything = listed("state=all")
    assert len(everything) == N + 4
    assert listed("state=closed") == set(done.closed)
    assert listed("state=open") == everything - set(done.closed)
    assert listed("state=in-investigation") == set(done.investigating)
    held = set(done.claimed) - set(done.investigating) | set(done.transferred)
    assert listed("state=claimed") == held
    touched = set(done.closed) | set(done.claimed) | set(done.transferred)
    assert listed("state=new") == everything - touched  # never touched, or released
    assert listed("state=requisition-sent") == set()
    assert listed("state=closed&jurisdiction=13") == set(done.closed[30:])
    # The store's count is the length of its list for every filter.
    for state in [None, "open", *(s.value for s in LeadState)]:
        assert store.count_ranked(state=state) == len(store.ranked(state=state))
        assert store.count_ranked(state=state, units=["U13"]) == len(
            store.ranked(state=state, units=["U13"])
        )


def test_the_page_defaults_to_open_with_a_visible_toggle(worked: tuple[Site, Worked]) -> None:
    site, done = worked
    client = site.signed_in("inv75")
    page = client.get("/leads?jurisdiction=75")
    assert '<strong aria-current="true" data-state="open">open</strong>' in page.text
    for state in ("all", "closed", "new", "claimed", "in-investigation", "requisition-sent"):
        assert f'<a href="/leads?jurisdiction=75&amp;state={state}" data-state="{state}">' in (
            page.text
        )
    open_ids, open_total = _rows_of_list(client, "/leads?jurisdiction=75")
    all_ids, all_total = _rows_of_list(client, "/leads?jurisdiction=75&state=all")
    closed_75 = [t for t in done.closed if t in site.targets["U75"]]
    assert all_total - open_total == len(closed_75) == 30
    assert set(all_ids) - set(open_ids) == set(closed_75)
    closed_page = client.get("/leads?jurisdiction=75&state=closed")
    assert sorted(_ids(closed_page.text)) == sorted(closed_75)
    assert "whose lead is closed" in closed_page.text


@pytest.mark.parametrize("state", ["opened", "CLOSED", "", "all "])
def test_an_unknown_state_is_refused(site: Site, state: str) -> None:
    client = site.signed_in("coord")
    assert client.get("/leads", params={"state": state}).status_code == 422
    assert client.get("/api/v1/targets", params={"state": state}).status_code == 422
    with pytest.raises(InputError, match="unknown lead state"):
        site.app.targets.ranked(state=state or "x")


def test_the_filter_names_every_lead_state() -> None:
    assert set(get_args(StateFilter)) == {"open", "all"} | {s.value for s in LeadState}


@pytest.mark.parametrize("name", ["coord", "inv75", "inv13"])
def test_without_a_map_the_total_is_the_unfiltered_list(site: Site, name: str) -> None:
    """Points mode (no jurisdiction map): the map's count of open leads is the length of the
    unfiltered list, which also opens on the open leads."""
    add_targets(site.app.engine, 300)
    first, second = site.targets["U75"]
    site.app.leads.claim(first, unit="U75", actor="t")
    site.app.leads.set_state(first, "closed", actor="t", outcome="duplicate")
    site.app.leads.claim(second, unit="U75", actor="t")
    client = site.signed_in(name)
    answer = client.get("/api/v1/map").json()
    assert answer["mode"] == "points"
    ids, total = _rows_of_list(client, "/leads")
    assert len(ids) == total == answer["open_leads"] > 0
    assert first not in ids and (second in ids) == (name != "inv13")
    _all, everything = _rows_of_list(client, "/leads?state=all")
    assert everything == total + (name != "inv13")
