"""Odd and hostile inputs get a 4xx answer, never a server error (on SQLite and PostgreSQL,
which refuses NUL characters in text): the ground schemathesis will cover more widely."""

from __future__ import annotations

from urllib.parse import quote

from tests.web.conftest import PASSWORD, Site, csrf_of

ODD = ["\x00", "a\x00b", "é" * 300, "' OR 1=1 --", "-1", "9" * 40, "%00", "<script>", " "]


def test_api_parameters(site: Site) -> None:
    _t, value = site.app.accounts.add_token("odd", "coordinator")
    _t, admin = site.app.accounts.add_token("odd-admin", "admin")
    _t, auditor = site.app.accounts.add_token("odd-auditor", "auditor")
    client = site.client()
    h = {"Authorization": f"Bearer {value}"}
    for odd in ODD:
        for path, params in (
            ("/api/v1/targets", {"jurisdiction": odd}),
            ("/api/v1/targets", {"unit": odd}),
            ("/api/v1/targets", {"limit": odd}),
            (f"/api/v1/targets/{quote(odd, safe='')}", {}),
            ("/api/v1/audit", {"limit": odd}),
        ):
            token = auditor if "audit" in path else value
            r = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code < 500, (path, params, r.status_code)
        r = client.post(
            "/api/v1/users",
            json={"name": odd, "role": odd, "unit": odd, "password": odd},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert 400 <= r.status_code < 500, (odd, r.status_code)
        r = client.post(
            "/api/v1/users",
            json={"name": "oddname", "role": odd, "password": PASSWORD + odd},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert 400 <= r.status_code < 500, (odd, r.status_code)
        for bad in (odd, "pwt_" + odd):
            if bad.isprintable() and bad.isascii():  # httpx itself refuses the others
                r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {bad}"})
                assert r.status_code == 401
    for target_id in ("0", str(2**63), str(2**63 - 1)):
        assert client.get(f"/api/v1/targets/{target_id}", headers=h).status_code in (404, 422)


def test_login_form(site: Site) -> None:
    for odd in ODD:
        client = site.client()
        token = csrf_of(client.get("/login").text)
        r = client.post("/login", data={"name": odd, "password": odd, "csrf": token})
        assert r.status_code in (401, 403, 422, 429), (odd, r.status_code)
        client.cookies.set("pw_session", odd.encode("utf-8").hex())
        assert client.get("/leads", follow_redirects=False).status_code == 303
    # Every one of those was audited under a name that is safe to store.
    failed = [e for e in site.app.audit.latest(100) if e.action == "login.failed"]
    assert failed and all("\x00" not in (e.object or "") for e in failed)
    assert site.app.audit.verify().ok
