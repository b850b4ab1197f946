"""The operation planner, operations and their packages in the web app: coordinators plan,
create (frozen) and dispatch; investigators see an operation only as far as their unit's part goes;
everything is audited and the audit log verifies. Real targets in units U75 (2), U13 (1) and one
placed nowhere (conftest)."""

from __future__ import annotations

import io
import json
import zipfile

from fastapi.testclient import TestClient

from tests.web.conftest import Site, csrf_of


def _token(site: Site, name: str, role: str, unit: str | None = None) -> dict[str, str]:
    _t, value = site.app.accounts.add_token(name, role, unit=unit)
    return {"Authorization": f"Bearer {value}"}


def _create(client: TestClient, name: str, **filters: str) -> int:
    page = client.get("/operations/new", params={"preview": "true", **filters})
    assert page.status_code == 200, page.text
    data = {"csrf": csrf_of(page.text), "name": name, **filters}
    r = client.post("/operations", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def test_planner_previews_creates_dispatches_and_offers_packages(site: Site) -> None:
    client = site.signed_in("coord")
    page = client.get("/operations/new", params={"preview": "true"})
    assert page.status_code == 200
    # Every target: U75 (2, jurisdiction 75), U13 (1, jurisdiction 13), one placed nowhere.
    assert "4 targets in 2 départements" in page.text
    assert 'id="operation-create"' in page.text
    narrow = client.get("/operations/new", params={"preview": "true", "jurisdictions": "13"})
    assert "1 target in 1 département" in narrow.text
    assert (
        client.get("/operations/new", params={"preview": "true", "since": "yesterday"}).status_code
        == 400
    )

    op_id = _create(client, "Op Alpha")
    shown = client.get(f"/operations/{op_id}")
    assert shown.status_code == 200 and "Op Alpha" in shown.text
    for ids in site.targets.values():
        for i in ids:
            assert f"T-{i:06d}" in shown.text
    assert 'id="operation-dispatch"' in shown.text
    # A second operation of the same name is refused, and shown on the planner.
    again = client.get("/operations/new", params={"preview": "true"})
    r = client.post("/operations", data={"csrf": csrf_of(again.text), "name": "Op Alpha"})
    assert r.status_code == 400 and "already exists" in r.text

    r = client.post(
        f"/operations/{op_id}/dispatch",
        data={"csrf": csrf_of(shown.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    folder = site.app.settings.home / "operations" / str(op_id)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {u["unit"]: u["targets"] for u in manifest["units"]} == {
        "U13": 1,
        "U75": 2,
        "_unassigned": 1,
    }
    shown = client.get(f"/operations/{op_id}")
    assert f"/api/v1/operations/{op_id}/packages/U75" in shown.text
    z = client.get(f"/api/v1/operations/{op_id}/packages/U75")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        names = sorted(zf.namelist())
        doc = json.loads(zf.read(f"operation-{op_id}-U75/targets.json"))
    assert names == [
        f"operation-{op_id}-U75/{n}"
        for n in ("manifest.json", "requisitions.csv", "targets.csv", "targets.json")
    ]
    assert sorted(t["id"] for t in doc["targets"]) == sorted(site.targets["U75"])
    # The same package twice is the same bytes.
    assert client.get(f"/api/v1/operations/{op_id}/packages/U75").content == z.content
    csv = client.get(f"/api/v1/operations/{op_id}/national-summary/csv")
    assert csv.status_code == 200 and csv.text.startswith("jurisdiction,name,targets,units")
    # Dispatching again keeps the first dispatch's files.
    before = (folder / "manifest.json").read_bytes()
    r = client.post(f"/operations/{op_id}/dispatch", data={"csrf": csrf_of(shown.text)})
    assert r.status_code == 200 and (folder / "manifest.json").read_bytes() == before

    actions = [e.action for e in site.app.audit.iter_entries() if e.actor == "coord"]
    for action in (
        "operation.preview",
        "operation.create",
        "operation.view",
        "operation.dispatch",
        "operation.download",
    ):
        assert action in actions, action
    dispatches = [
        e.detail["again"] for e in site.app.audit.iter_entries() if e.action == "operation.dispatch"
    ]
    assert dispatches == [False, True]
    assert site.app.audit.verify().ok


def test_investigators_see_their_units_part_only(site: Site) -> None:
    coord = site.signed_in("coord")
    everything = _create(coord, "All")
    only75 = _create(coord, "Paris", jurisdictions="75")
    page = coord.get(f"/operations/{everything}")
    coord.post(f"/operations/{everything}/dispatch", data={"csrf": csrf_of(page.text)})

    inv = site.signed_in("inv75")
    listing = inv.get("/operations")
    assert listing.status_code == 200 and "All" in listing.text and "Paris" in listing.text
    shown = inv.get(f"/operations/{everything}")
    assert shown.status_code == 200
    assert "2 targets in 1 département" in shown.text
    for other in site.targets["U13"] + site.targets["-"]:
        assert f"T-{other:06d}" not in shown.text
    assert "national-summary" not in shown.text and 'id="operation-dispatch"' not in shown.text
    api = inv.get(f"/api/v1/operations/{everything}").json()
    assert sorted(t["id"] for t in api["targets"]) == sorted(site.targets["U75"])
    assert api["national"] is False
    assert [p["unit"] for p in api["packages"]] == ["U75"]
    assert inv.get(f"/api/v1/operations/{everything}/packages/U75").status_code == 200

    # Another unit's package, the national summary, planning and dispatch are refused.
    other = inv.get(f"/api/v1/operations/{everything}/packages/U13")
    missing = inv.get(f"/api/v1/operations/{everything}/packages/U99")
    assert (other.status_code, other.json()) == (missing.status_code, missing.json())
    assert other.status_code == 404
    assert inv.get(f"/api/v1/operations/{everything}/national-summary/json").status_code == 403
    assert inv.get("/operations/new").status_code == 403
    assert inv.post(f"/api/v1/operations/{everything}/dispatch").status_code == 403

    # inv13 has no part in "Paris": it answers exactly like an operation that does not exist.
    inv13 = site.signed_in("inv13")
    listed = {o["id"] for o in inv13.get("/api/v1/operations").json()}
    assert listed == {everything}
    paris = inv13.get(f"/api/v1/operations/{only75}")
    nothing = inv13.get("/api/v1/operations/999999")
    assert (paris.status_code, paris.json()) == (nothing.status_code, nothing.json())
    assert paris.status_code == 404 and paris.json() == {"detail": "no such operation"}
    reasons = [e.detail["reason"] for e in site.app.audit.latest(2)]
    assert reasons == ["missing", "outside-scope"]
    assert inv13.get(f"/operations/{only75}").status_code == 404

    # Auditors and admins see no operation at all.
    for name in ("auditor", "admin"):
        c = site.signed_in(name)
        assert c.get("/operations").status_code == 403
        assert c.get(f"/api/v1/operations/{everything}").status_code == 403
    report = site.app.audit.verify()
    assert report.ok
    views = [
        (e.actor, e.object) for e in site.app.audit.iter_entries() if e.action == "operation.view"
    ]
    assert ("inv75", f"operation:{everything}") in views


def test_api_planner_with_a_token(site: Site) -> None:
    h = _token(site, "planner", "coordinator")
    client = site.client()
    preview = client.get(
        "/api/v1/operations/preview", params={"jurisdiction": ["75", "13"]}, headers=h
    )
    assert preview.status_code == 200
    assert preview.json()["headline"] == "3 targets in 2 départements"
    body = {"name": "Op API", "jurisdictions": ["13"], "min_score": 0}
    created = client.post("/api/v1/operations", json=body, headers=h)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert [t["id"] for t in doc["targets"]] == site.targets["U13"]
    assert doc["operation"]["created_by"] == "token:planner"
    assert client.post("/api/v1/operations", json=body, headers=h).status_code == 400
    none = client.post("/api/v1/operations", json={"name": "Empty", "min_score": 10**9}, headers=h)
    assert none.status_code == 400 and "no lead matches" in none.json()["detail"]
    op_id = doc["operation"]["id"]
    assert (
        client.get(f"/api/v1/operations/{op_id}/national-summary/json", headers=h).status_code
        == 409
    )
    packages = client.post(f"/api/v1/operations/{op_id}/dispatch", headers=h).json()
    assert [(p["unit"], p["targets"]) for p in packages] == [("U13", 1)]
    summary = client.get(f"/api/v1/operations/{op_id}/national-summary/json", headers=h).json()
    assert summary["headline"] == "1 target in 1 département"
    # An investigator's token reads its unit's part; a bad filter is a 422.
    inv = _token(site, "inv-script", "investigator", "U75")
    assert client.get(f"/api/v1/operations/{op_id}", headers=inv).status_code == 404
    bad = client.get("/api/v1/operations/preview", params={"jurisdiction": "a b"}, headers=h)
    assert bad.status_code == 422


# --- the authorisation matrix of the operations' routes ----------------------------------------
#
# Every route x every role x an operation holding the caller's unit's targets ("own") or not
# ("other"), through pages and API (session) or the API (token). Operations: ALL (every target,
# dispatched), P75 (U75 only) and P13 (U13 only). Investigators get 404 for an operation without
# their unit's targets and for another unit's package; roles without the permission get 403.

PLAN, READ = "plan-operations", "read-operations"
#: (method, path, permission, what): {op} is an operation id, {folder} a package folder.
MATRIX = (
    ("GET", "/operations", READ, "list"),
    ("GET", "/operations/new?preview=true", PLAN, "plain"),
    ("POST", "/operations", PLAN, "create"),
    ("GET", "/operations/{op}", READ, "op"),
    ("POST", "/operations/{op}/dispatch", PLAN, "op"),
    ("GET", "/api/v1/operations", READ, "list"),
    ("GET", "/api/v1/operations/preview", PLAN, "plain"),
    ("POST", "/api/v1/operations", PLAN, "create"),
    ("GET", "/api/v1/operations/{op}", READ, "op"),
    ("POST", "/api/v1/operations/{op}/dispatch", PLAN, "op"),
    ("GET", "/api/v1/operations/{op}/packages/{folder}", READ, "package"),
    ("GET", "/api/v1/operations/{op}/national-summary/json", PLAN, "op"),
)
#: The audit action each allowed call must append.
ACTION = {
    "list": "operation.list",
    "plain": "operation.preview",
    "create": "operation.create",
}


def test_the_routes_of_the_matrix_are_the_modules_routes() -> None:
    from fastapi.routing import APIRoute

    from peerwatch.web import operations

    declared = {
        (m, r.path.replace("{operation_id}", "{op}").replace("national-summary/{fmt}", "x"))
        for router in (operations.pages_router, operations.api_router)
        for r in router.routes
        if isinstance(r, APIRoute)
        for m in r.methods or set()
    }
    listed = {
        (m, p.split("?")[0].replace("national-summary/json", "x")) for m, p, _perm, _w in MATRIX
    }
    assert declared == listed


def _matrix(site: Site, via: str) -> None:
    coord = site.signed_in("coord")
    ops = {
        "ALL": _create(coord, "ALL"),
        "P75": _create(coord, "P75", jurisdictions="75"),
        "P13": _create(coord, "P13", jurisdictions="13"),
    }
    page = coord.get(f"/operations/{ops['ALL']}")
    coord.post(f"/operations/{ops['ALL']}/dispatch", data={"csrf": csrf_of(page.text)})
    from peerwatch.accounts.role import PERMISSIONS, Role
    from tests.web.conftest import USERS

    n = 0
    for name, (role, unit) in USERS.items():
        if via == "session":
            client = site.signed_in(name)
            csrf = csrf_of(client.get("/").text)
            headers = {"X-CSRF-Token": csrf}
        else:
            client = site.client()
            headers = _token(site, f"m-{name}", role, unit)
            csrf = ""
        allowed = {p.value for p in PERMISSIONS[Role(role)]}
        own = {"U75": "P75", "U13": "P13"}.get(unit or "")
        for method, path, permission, what in MATRIX:
            if via == "token" and not path.startswith("/api/"):
                continue
            cases: list[tuple[str, str, bool]] = []  # (op, folder, visible)
            if what in ("op", "package"):
                for key, op_id in ops.items():
                    visible = unit is None or key in ("ALL", own)
                    if what == "package":
                        # Dispatch rows come first: by now an operation may have been dispatched.
                        home = site.app.settings.home / "operations" / str(op_id)
                        for folder in ("U75", "U13", "_unassigned"):
                            ok = (home / "units" / folder).is_dir() and unit in (None, folder)
                            cases.append((str(op_id), folder, ok))
                    else:
                        cases.append((str(op_id), "", visible))
            else:
                cases.append(("", "", True))
            for ref, folder, visible in cases:
                n += 1
                url = path.replace("{op}", ref).replace("{folder}", folder)
                before = site.app.audit.head()[0]
                if method == "GET":
                    r = client.get(url, headers=headers, follow_redirects=False)
                elif url.startswith("/api/") and what == "create":
                    r = client.post(url, json={"name": f"m{n}"}, headers=headers)
                elif url.startswith("/api/"):
                    r = client.post(url, headers=headers, follow_redirects=False)
                else:
                    data = {"csrf": csrf, "name": f"m{n}"}
                    r = client.post(url, data=data, follow_redirects=False)
                where = (name, via, method, url)
                new = site.app.audit.latest(site.app.audit.head()[0] - before)
                if permission not in allowed:
                    assert r.status_code == 403, where
                    assert new == [], where  # refused before anything is read
                    continue
                if not visible:
                    assert r.status_code == 404, (where, r.text)
                    assert [e.action for e in new] == ["operation.denied"], where
                    continue
                assert r.status_code in (200, 201, 303), (where, r.status_code, r.text)
                assert new and all(e.actor.endswith(name) for e in new), where
                actions = {e.action for e in new}
                if what in ACTION:
                    assert ACTION[what] in actions, (where, actions)
                elif what == "package" or url.endswith("/json"):
                    assert "operation.download" in actions, (where, actions)
                elif method == "POST":
                    assert "operation.dispatch" in actions, (where, actions)
                else:
                    assert "operation.view" in actions, (where, actions)
    report = site.app.audit.verify()
    assert report.ok and report.checked == site.app.audit.head()[0]


def test_operations_matrix_with_sessions(site: Site) -> None:
    _matrix(site, "session")


def test_operations_matrix_with_tokens(site: Site) -> None:
    _matrix(site, "token")


def test_a_query_that_ignores_the_scope_shows_nothing(site: Site) -> None:
    """Should the targets query ever return another unit's rows, the request fails closed."""
    from sqlalchemy import Connection

    from peerwatch.web.operations import ScopedOperations
    from peerwatch.web.site import create_app

    class Leaky(ScopedOperations):
        def _target_rows(
            self, conn: Connection, op_id: int, units: frozenset[str] | None
        ) -> list[tuple[str | None, str]]:
            return super()._target_rows(conn, op_id, None)

    op_id = _create(site.signed_in("coord"), "Leak test")
    web = create_app(site.app, site.config)
    web.state.operations = Leaky(site.app)
    client = TestClient(web)
    from tests.web.conftest import login

    login(client, "inv75")
    for url in (f"/api/v1/operations/{op_id}", f"/operations/{op_id}"):
        r = client.get(url)
        assert r.status_code == 500, url
        for other in site.targets["U13"] + site.targets["U75"] + site.targets["-"]:
            assert f"T-{other:06d}" not in r.text
