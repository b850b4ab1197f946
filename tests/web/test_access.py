"""The authorisation matrix: every route x every role x own / other / unrouted target, through
the pages, the API with a session and the API with a bearer token. Cross-unit reads are refused
by the real targets query; every view is in the audit log, and the audit log verifies."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from peerwatch.accounts.role import PERMISSIONS, Permission, Role
from peerwatch.leads.targets import TargetSummary
from peerwatch.web.site import api_routes, create_app
from tests.web.conftest import PASSWORD, USERS, Site, csrf_of, login


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "{target_id}" is filled in per case
    permission: Permission | None  # None: any signed-in principal
    reads: str  # "targets", "target", "other"; "elsewhere": allowed calls are checked in the
    # module's own test (tests/web/test_operations_web.py, test_watchlist_web.py), denials here;
    # "action": a change to one target (claim, export, ...): done or refused (409) within the
    # scope, 404 outside it. `body`: the form fields / JSON body it is called with.
    body: tuple[tuple[str, str], ...] = ()


ROUTES = (
    Route("GET", "/leads", Permission.READ_TARGETS, "targets"),
    Route("GET", "/leads/{target_id}", Permission.READ_TARGETS, "target"),
    Route("GET", "/admin/users", Permission.MANAGE_USERS, "other"),
    Route("POST", "/admin/users", Permission.MANAGE_USERS, "other"),
    Route("GET", "/audit", Permission.READ_AUDIT, "other"),
    Route("GET", "/api/v1/me", None, "other"),
    Route("GET", "/api/v1/targets", Permission.READ_TARGETS, "targets"),
    Route("GET", "/api/v1/targets/{target_id}", Permission.READ_TARGETS, "target"),
    Route("GET", "/api/v1/audit", Permission.READ_AUDIT, "other"),
    Route("GET", "/api/v1/audit/verify", Permission.READ_AUDIT, "other"),
    Route("GET", "/api/v1/users", Permission.MANAGE_USERS, "other"),
    Route("POST", "/api/v1/users", Permission.MANAGE_USERS, "other"),
    # web/operations.py, web/watchlist.py, web/sensors.py
    Route("GET", "/operations", Permission.READ_OPERATIONS, "other"),
    Route("GET", "/operations/new", Permission.PLAN_OPERATIONS, "other"),
    Route("POST", "/operations", Permission.PLAN_OPERATIONS, "elsewhere"),
    Route("GET", "/operations/{operation_id}", Permission.READ_OPERATIONS, "elsewhere"),
    Route("POST", "/operations/{operation_id}/dispatch", Permission.PLAN_OPERATIONS, "elsewhere"),
    Route("GET", "/api/v1/operations", Permission.READ_OPERATIONS, "other"),
    Route("GET", "/api/v1/operations/preview", Permission.PLAN_OPERATIONS, "other"),
    Route("POST", "/api/v1/operations", Permission.PLAN_OPERATIONS, "elsewhere"),
    Route("GET", "/api/v1/operations/{operation_id}", Permission.READ_OPERATIONS, "elsewhere"),
    Route(
        "POST",
        "/api/v1/operations/{operation_id}/dispatch",
        Permission.PLAN_OPERATIONS,
        "elsewhere",
    ),
    Route(
        "GET",
        "/api/v1/operations/{operation_id}/packages/{folder}",
        Permission.READ_OPERATIONS,
        "elsewhere",
    ),
    Route(
        "GET",
        "/api/v1/operations/{operation_id}/national-summary/{fmt}",
        Permission.PLAN_OPERATIONS,
        "elsewhere",
    ),
    Route("GET", "/watchlist", Permission.READ_WATCHLIST, "other"),
    Route("POST", "/watchlist/imports", Permission.MANAGE_WATCHLIST, "elsewhere"),
    Route("GET", "/watchlist/imports/{import_id}", Permission.MANAGE_WATCHLIST, "elsewhere"),
    Route("GET", "/api/v1/watchlist", Permission.READ_WATCHLIST, "other"),
    Route("POST", "/api/v1/watchlist/imports", Permission.MANAGE_WATCHLIST, "elsewhere"),
    Route("GET", "/api/v1/watchlist/imports/{import_id}", Permission.MANAGE_WATCHLIST, "elsewhere"),
    Route("GET", "/sensors", Permission.READ_SENSORS, "other"),
    Route("GET", "/api/v1/sensors", Permission.READ_SENSORS, "other"),
    # web/map.py, web/target_actions.py, web/cases.py
    Route("GET", "/map", Permission.READ_TARGETS, "other"),
    Route("GET", "/api/v1/map", Permission.READ_TARGETS, "other"),
    Route("GET", "/api/v1/targets/{target_id}/lead", Permission.READ_TARGETS, "target"),
    *(
        Route(method, path.format(action=action), Permission.CLAIM_TARGETS, "action", body)
        for path in ("/leads/{{target_id}}/{action}", "/api/v1/targets/{{target_id}}/{action}")
        for method in ("POST",)
        for action, body in (
            ("claim", (("unit", "U13"),)),
            ("release", ()),
            ("transfer", (("to_unit", "U13"),)),
            ("state", (("state", "in-investigation"),)),
        )
    ),
    Route("POST", "/leads/{target_id}/export", Permission.EXPORT_CASES, "action"),
    Route("POST", "/api/v1/targets/{target_id}/export", Permission.EXPORT_CASES, "action"),
    Route("GET", "/cases/{name}/{file}", Permission.EXPORT_CASES, "elsewhere"),
    Route("GET", "/api/v1/cases/{name}/{file}", Permission.EXPORT_CASES, "elsewhere"),
)
#: Routes that need no sign-in (the sign-in itself, and the home redirect).
PUBLIC = {("GET", "/"), ("GET", "/login"), ("POST", "/login"), ("GET", "/login/totp")}
PUBLIC |= {("POST", "/login/totp"), ("POST", "/logout")}


def app_routes(web: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of the app, whichever module's router adds it."""
    return {
        (m, route.path) for route in api_routes(web) for m in (route.methods or set()) - {"HEAD"}
    }


def test_the_matrix_covers_every_route(site: Site) -> None:
    """A new route must join the matrix (or the public list) before this passes."""
    declared = app_routes(create_app(site.app, site.config))
    assert declared == {(r.method, r.path) for r in ROUTES} | PUBLIC


def _allowed_units(role: str, unit: str | None) -> Collection[str] | None:
    if role == "coordinator":
        return None
    if role == "investigator":
        assert unit is not None
        return {unit}
    return set()


def _call(
    client: TestClient, route: Route, target_id: int, headers: dict[str, str], n: int
) -> tuple[int, str]:
    path = route.path.replace("{target_id}", str(target_id))
    if route.method == "GET":
        r = client.get(path, headers=headers, follow_redirects=False)
    elif route.reads == "action" and path.startswith("/api/"):
        r = client.post(path, json=dict(route.body), headers=headers, follow_redirects=False)
    elif route.reads == "action":
        data = {**dict(route.body), "csrf": headers.get("X-CSRF-Token", "")}
        r = client.post(path, data=data, follow_redirects=False)
    elif path.startswith("/api/"):
        body = {"name": f"matrix{n}", "role": "auditor", "password": PASSWORD}
        r = client.post(path, json=body, headers=headers, follow_redirects=False)
    else:
        data = {
            "name": f"matrix{n}",
            "role": "auditor",
            "password": PASSWORD,
            "csrf": headers.get("X-CSRF-Token", ""),
        }
        r = client.post(path, data=data, follow_redirects=False)
    return r.status_code, r.text


def _session_csrf(client: TestClient) -> str:
    """The token the session's pages carry: "/" leads every role to a page it may see, and every
    signed-in page has the sign-out form."""
    page = client.get("/")
    assert page.status_code == 200
    return csrf_of(page.text)


@pytest.mark.parametrize("via", ["session", "token"])
def test_authorisation_matrix(site: Site, via: str) -> None:
    all_ids = {i for ids in site.targets.values() for i in ids}
    n = views = 0
    for name, (role, unit) in USERS.items():
        if via == "session":
            client = site.signed_in(name)
            headers = {"X-CSRF-Token": _session_csrf(client)}
        else:
            _t, value = site.app.accounts.add_token(f"tok-{name}", role, unit=unit)
            client = site.client()
            headers = {"Authorization": f"Bearer {value}"}
        allowed = _allowed_units(role, unit)
        visible = {
            i for u, ids in site.targets.items() for i in ids if allowed is None or u in allowed
        }
        principal_name = name if via == "session" else f"tok-{name}"
        for route in ROUTES:
            if via == "token" and not route.path.startswith("/api/"):
                continue  # pages are for browsers: a token opens none
            may = route.permission is None or route.permission in PERMISSIONS[Role(role)]
            cases = sorted(all_ids) if route.reads in ("target", "action") else [0]
            for target_id in cases:
                n += 1
                before = site.app.audit.head()[0]
                status, text = _call(client, route, target_id, headers, n)
                where = (name, via, route.method, route.path, target_id)
                if not may:
                    assert status == 403, where
                    continue
                if route.reads == "elsewhere":
                    continue
                if route.reads == "action":
                    if target_id in visible:
                        # Done, or refused by the lead workflow with its reason; audited.
                        assert status in (200, 201, 303, 409), (where, status, text)
                        (entry,) = site.app.audit.latest(1)
                        assert entry.object == f"target:{target_id}", where
                        assert entry.action.split(".")[0] in ("target", "case"), where
                    else:
                        assert status == 404 and "no such target" in text, where
                        (entry,) = site.app.audit.latest(1)
                        assert entry.action == "target.denied", where
                    continue
                if route.reads == "target":
                    if target_id in visible:
                        assert status == 200, where
                        new = site.app.audit.latest(site.app.audit.head()[0] - before)
                        assert [(e.action, e.object, e.role, e.address) for e in new] == [
                            ("target.view", f"target:{target_id}", role, "testclient")
                        ], where
                        assert new[0].actor.endswith(principal_name)
                        views += 1
                    else:
                        # Another unit's target answers exactly like a missing one.
                        assert status == 404, where
                        assert "no such target" in text
                        (entry,) = site.app.audit.latest(1)
                        assert entry.action == "target.denied", where
                        assert entry.detail == {"reason": "outside-scope"}
                elif route.reads == "targets":
                    assert status == 200, where
                    (entry,) = site.app.audit.latest(1)
                    assert entry.action == "target.list"
                    assert set(entry.detail["targets"]) == visible, where  # type: ignore[arg-type]
                    if route.path.startswith("/api/"):
                        assert {t["id"] for t in json.loads(text)} == visible, where
                    for other in all_ids - visible:
                        assert f"T-{other:06d}" not in text, where
                else:
                    assert status in (200, 201), (where, status, text)
    # The coordinator sees 4 targets, inv75 2, inv13 1; through each page and API route that reads
    # one target, or the API routes only.
    readers = [r for r in ROUTES if r.reads == "target"]
    reads = len([r for r in readers if via == "session" or r.path.startswith("/api/")])
    assert views == (4 + 2 + 1) * reads
    entries = list(site.app.audit.iter_entries())
    assert sum(e.action == "target.view" for e in entries) == views
    report = site.app.audit.verify()
    assert report.ok and report.checked == len(entries) and report.head_seq == len(entries)


def test_pages_refuse_tokens_and_send_browsers_to_login(site: Site) -> None:
    _t, value = site.app.accounts.add_token("script", "coordinator")
    client = site.client()
    r = client.get("/leads", headers={"Authorization": f"Bearer {value}"}, follow_redirects=False)
    # Pages read only the session cookie.
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/api/v1/targets").status_code == 401
    assert (
        client.get("/api/v1/targets", headers={"Authorization": "Bearer pwt_nope"}).status_code
        == 401
    )
    site.app.accounts.revoke_token("script")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {value}"}).status_code == 401


def test_investigator_filters_cannot_widen_the_scope(site: Site) -> None:
    client = site.signed_in("inv75")
    for params in ({"unit": "U13"}, {"jurisdiction": "13"}, {"unit": "U75"}):
        r = client.get("/api/v1/targets", params=params)
        ids = {t["id"] for t in r.json()}
        assert ids <= set(site.targets["U75"]), params
    assert {t["id"] for t in client.get("/api/v1/targets", params={"unit": "U75"}).json()} == set(
        site.targets["U75"]
    )
    # A missing id and another unit's id are told apart only in the audit log.
    missing = client.get("/api/v1/targets/999999")
    other = client.get(f"/api/v1/targets/{site.targets['U13'][0]}")
    assert (missing.status_code, missing.json()) == (other.status_code, other.json())
    reasons = [e.detail["reason"] for e in site.app.audit.latest(2)]
    assert reasons == ["outside-scope", "missing"]


def test_target_page_shows_metadata_and_observations(site: Site) -> None:
    client = site.signed_in("inv75")
    target_id = site.targets["U75"][0]
    page = client.get(f"/leads/{target_id}")
    assert page.status_code == 200
    summary = site.app.targets.get(target_id)
    assert summary.label in page.text and summary.ips[0] in page.text
    detail = client.get(f"/api/v1/targets/{target_id}").json()
    assert detail["target"]["unit"] == "U75"
    assert [o["ip"] for o in detail["observations"]] == list(summary.ips)
    assert detail["explanation"]["placement"]["unit"] == "U75"


class LeakyStore:
    """A broken store that ignores `units=`: the web layer must fail closed, not show rows."""

    def __init__(self, rows: Sequence[TargetSummary]) -> None:
        self.rows = list(rows)

    def ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
        state: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[TargetSummary]:
        return self.rows

    def count_ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
        state: str | None = None,
    ) -> int:
        return len(self.rows)

    def get(self, target_id: int, /) -> TargetSummary:
        return next(r for r in self.rows if r.id == target_id)

    def observations(self, target_id: int, /) -> list[object]:
        return []

    def explain(self, target_id: int, /) -> object:
        return {}


def test_a_store_that_ignores_the_scope_shows_nothing(site: Site) -> None:
    leaky = LeakyStore(site.app.targets.ranked())
    client = TestClient(create_app(site.app, site.config, targets=leaky))
    login(client, "inv75")
    r = client.get("/api/v1/targets")
    assert r.status_code == 500
    for other in site.targets["U13"] + site.targets["-"]:
        assert f"T-{other:06d}" not in r.text
    page = client.get("/leads")
    assert page.status_code == 500 and "T-" not in page.text


def test_a_wrong_method_names_every_allowed_one(site: Site) -> None:
    """405 answers carry the methods of every module's routes for that path (RFC 9110 15.5.6)."""
    r = site.client().delete("/api/v1/operations")
    assert r.status_code == 405
    assert set(r.headers["Allow"].split(", ")) == {"GET", "POST"}
