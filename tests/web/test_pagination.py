"""Paging through the ranked list, on the page and in the API, with 1,300+ targets.

Walking every page gives exactly the store's full ranking once (no repeat, no gap, same order),
the counts are the database's, every page is audited with its offset and the ids it showed, and an
investigator never sees another unit's row on any page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from peerwatch.web.scoped_targets import MAX_LISTED, PAGE_SIZE
from tests.web.conftest import Site
from tests.web.many_targets import add_targets

N = 1_300

_ROW = re.compile(r'<tr>\s*<td><a href="/leads/(\d+)">T-\d{6}</a></td>')
_COUNT = re.compile(r'<p id="leads-count">([^<]*)</p>')


@pytest.fixture
def many(site: Site) -> Iterator[Site]:
    for unit, ids in add_targets(site.app.engine, N).items():
        site.targets.setdefault(unit, []).extend(ids)
    yield site


def _ids(page_html: str) -> list[int]:
    return [int(x) for x in _ROW.findall(page_html)]


def _link(page_html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', page_html)
    return None if found is None else html.unescape(found[1])


def _walk_pages(client: TestClient, url: str) -> tuple[list[int], list[str]]:
    """Follow "next" from `url` to the end: the ids shown, and each page's count line."""
    ids: list[int] = []
    counts: list[str] = []
    next_url: str | None = url
    while next_url is not None:
        r = client.get(next_url)
        assert r.status_code == 200, r.text
        ids += _ids(r.text)
        counts.append(" ".join(_COUNT.findall(r.text)[0].split()))
        next_url = _link(r.text, "next")
        assert len(counts) < 100, "the pages do not end"
    return ids, counts


def test_the_pages_walk_the_whole_ranking_once(many: Site) -> None:
    client = many.signed_in("coord")
    expected = [t.id for t in many.app.targets.ranked()]
    assert len(expected) == N + 4
    ids, counts = _walk_pages(client, "/leads?state=all")
    assert ids == expected  # same order, nothing twice, nothing left out
    pages = -(-len(expected) // PAGE_SIZE)
    assert len(counts) == pages
    assert counts[0].startswith(f"1–100 of {len(expected):,} ")
    assert counts[5].startswith(f"501–600 of {len(expected):,} ")
    assert counts[-1].startswith(f"1,301–{len(expected):,} of {len(expected):,} ")


def test_previous_and_next_keep_the_filters(many: Site) -> None:
    client = many.signed_in("coord")
    in_75 = many.app.targets.count_ranked(jurisdiction="75")
    assert in_75 > 2 * 250
    page = client.get("/leads?jurisdiction=75&limit=250&offset=250")
    assert page.status_code == 200
    assert " ".join(_COUNT.findall(page.text)[0].split()).startswith(f"251–500 of {in_75:,} ")
    nxt, prev = _link(page.text, "next"), _link(page.text, "prev")
    assert nxt == "/leads?jurisdiction=75&offset=500&limit=250"
    assert prev == "/leads?jurisdiction=75&limit=250"  # the first page: no offset
    expected = [t.id for t in many.app.targets.ranked(jurisdiction="75", state="open")]
    assert _ids(page.text) == expected[250:500]
    assert _ids(client.get(nxt).text) == expected[500:750]
    assert _ids(client.get(prev).text) == expected[:250]
    # The state toggle and the filter form keep the jurisdiction and the page size.
    assert 'href="/leads?jurisdiction=75&amp;state=all&amp;limit=250"' in page.text
    assert '<input type="hidden" name="limit" value="250">' in page.text
    # The first page has no "previous", the last no "next".
    first = client.get("/leads?jurisdiction=75&limit=250")
    assert _link(first.text, "prev") is None
    last = client.get(f"/leads?jurisdiction=75&limit=250&offset={in_75 - 1}")
    assert _link(last.text, "next") is None and _ids(last.text) == expected[-1:]


def test_past_the_end_shows_nothing_and_leads_back(many: Site) -> None:
    client = many.signed_in("coord")
    total = many.app.targets.count_ranked()
    page = client.get(f"/leads?state=all&offset={total + 1000}")
    assert page.status_code == 200 and _ids(page.text) == []
    assert f"the list has {total}" in page.text
    back = _link(page.text, "prev")
    assert back is not None
    assert (
        _ids(client.get(back).text)
        == [t.id for t in many.app.targets.ranked()][(total - 1) // PAGE_SIZE * PAGE_SIZE :]
    )


def test_the_api_pages_with_total_and_links(many: Site) -> None:
    client = many.signed_in("coord")
    expected = [t.id for t in many.app.targets.ranked()]
    seen: list[int] = []
    url: str | None = "/api/v1/targets?limit=400"
    while url is not None:
        r = client.get(url)
        assert r.status_code == 200, r.text
        assert int(r.headers["X-Total-Count"]) == len(expected)
        body = r.json()
        assert 0 < len(body) <= 400
        seen += [t["id"] for t in body]
        url = r.links.get("next", {}).get("url")
    assert seen == expected
    r = client.get("/api/v1/targets?limit=400&offset=400")
    assert r.links["prev"]["url"].endswith("/api/v1/targets?state=all&limit=400&offset=0")
    assert r.links["next"]["url"].endswith("/api/v1/targets?state=all&limit=400&offset=800")
    # The default page is unchanged: the first 500 of every state.
    default = client.get("/api/v1/targets")
    assert [t["id"] for t in default.json()] == expected[:MAX_LISTED]


@pytest.mark.parametrize(
    "query",
    ["limit=0", f"limit={MAX_LISTED + 1}", "offset=-1", "offset=1000000001", "limit=x"],
)
def test_page_bounds_are_enforced(site: Site, query: str) -> None:
    client = site.signed_in("coord")
    assert client.get(f"/api/v1/targets?{query}").status_code == 422
    assert client.get(f"/leads?{query}").status_code == 422


def test_every_page_is_audited_with_its_rows(many: Site) -> None:
    client = many.signed_in("inv13")
    client.get("/leads?offset=100&limit=50")
    client.get("/api/v1/targets?offset=200&limit=30&state=open")
    api_entry, page_entry = [e for e in many.app.audit.latest(10) if e.action == "target.list"][:2]
    expected = [t.id for t in many.app.targets.ranked(units=["U13"], state="open")]
    assert page_entry.actor == "inv13" and page_entry.unit == "U13"
    assert page_entry.detail["offset"] == 100 and page_entry.detail["limit"] == 50
    assert page_entry.detail["total"] == len(expected)
    assert page_entry.detail["targets"] == expected[100:150]
    assert page_entry.detail["filters"] == {"jurisdiction": None, "unit": None, "state": "open"}
    assert api_entry.detail["targets"] == expected[200:230]
    assert api_entry.detail["offset"] == 200 and api_entry.detail["count"] == 30


@pytest.mark.parametrize("name", ["inv75", "inv13"])
def test_no_page_shows_another_units_row(many: Site, name: str) -> None:
    unit = "U75" if name == "inv75" else "U13"
    others = {tid for u, ids in many.targets.items() if u != unit for tid in ids}
    mine = set(many.targets[unit])
    client = many.signed_in(name)
    ids, counts = _walk_pages(client, "/leads?state=all&limit=200")
    assert set(ids) == mine and len(ids) == len(mine)
    assert not set(ids) & others
    assert counts[0].startswith(f"1–200 of {len(mine):,} ")
    # Filtering on another unit or its jurisdiction narrows within the scope: nothing.
    for query in ("unit=U13", "jurisdiction=13") if unit == "U75" else ("unit=U75",):
        r = client.get(f"/api/v1/targets?{query}")
        assert r.json() == [] and r.headers["X-Total-Count"] == "0"
    api_ids: list[int] = []
    for offset in range(0, len(mine) + MAX_LISTED, MAX_LISTED):
        api_ids += [t["id"] for t in client.get(f"/api/v1/targets?offset={offset}").json()]
    assert set(api_ids) == mine and len(api_ids) == len(mine)


def test_the_database_counts_and_cuts_the_page(many: Site) -> None:
    """LIMIT/OFFSET and COUNT go to the database: no query fetches the whole list."""
    statements: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, sql: str, params: object, *_: object) -> None:
        statements.append((sql, params))

    engine = many.app.engine
    client = many.signed_in("coord")
    event.listen(engine, "before_cursor_execute", record)
    try:
        r = client.get("/leads?state=all&offset=600&limit=50")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(_ids(r.text)) == 50
    listing = [s for s, _p in statements if "FROM targets" in s and "ORDER BY" in s]
    counting = [s for s, _p in statements if "count(*)" in s and "FROM targets" in s]
    assert len(listing) == 1 and len(counting) == 1, statements
    assert "LIMIT" in listing[0] and "OFFSET" in listing[0]
