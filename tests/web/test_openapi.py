"""The OpenAPI description: every API route, bearer auth, no interactive page loading a CDN."""

from __future__ import annotations

from fastapi.testclient import TestClient

from peerwatch.web import api
from peerwatch.web.site import create_app
from tests.web.conftest import Site
from tests.web.test_access import app_routes


def test_openapi_describes_every_api_route_and_nothing_else(site: Site) -> None:
    web = create_app(site.app, site.config)
    client = TestClient(web)
    doc = client.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    # Every API route of the app, whichever module adds it (web/api.py, operations.py, ...).
    routes = {(m, p) for m, p in app_routes(web) if p.startswith("/api/")}
    assert described == routes and len(routes) > len(api.router.routes) == 7
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    target = doc["paths"]["/api/v1/targets/{target_id}"]["get"]
    assert {"401", "403", "404"} <= set(target["responses"])
    # The interactive pages would load swagger-ui / redoc from a CDN: they are off.
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


def test_user_creation_schema_and_answers(site: Site) -> None:
    _t, admin = site.app.accounts.add_token("schema-admin", "admin")
    client = site.client()
    h = {"Authorization": f"Bearer {admin}"}
    ok = {"name": "newinv", "role": "investigator", "unit": "U75", "password": "x" * 12}
    assert client.post("/api/v1/users", json=ok, headers=h).status_code == 201
    # The schema itself says what is refused: a unit without the investigator role, or none
    # with it, a short password, an unknown role.
    for bad in (
        {**ok, "name": "n2", "role": "admin"},
        {**ok, "name": "n3", "unit": None},
        {**ok, "name": "n4", "password": "x" * 11},
        {**ok, "name": "n5", "role": "root"},
        {**ok, "name": "n6", "totp": 0},
    ):
        assert client.post("/api/v1/users", json=bad, headers=h).status_code == 422, bad
    taken = client.post("/api/v1/users", json=ok, headers=h)
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    # A method the path lacks: 405 naming every method it has.
    r = client.request("DELETE", "/api/v1/users", headers=h)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
