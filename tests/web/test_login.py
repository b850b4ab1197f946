"""Signing in and out: passwords, TOTP, rate limits, cookies, CSRF and headers."""

from __future__ import annotations

import pyotp
from fastapi.routing import APIRoute
from sqlalchemy import select

from peerwatch.storage.schema import web_sessions
from peerwatch.web import pages
from tests.web.conftest import PASSWORD, Site, csrf_of, login


def _actions(site: Site) -> list[tuple[str, str | None]]:
    return [(e.action, e.object) for e in reversed(site.app.audit.latest(1000))]


def test_login_ok_sets_a_strict_httponly_session_cookie(site: Site) -> None:
    client = site.client()
    response = login(client, "coord")
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("pw_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain HTTP on loopback unless configured
    assert client.get("/leads").status_code == 200
    assert ("login.ok", "user:coord") in _actions(site)
    # Only the token's digest is stored: the cookie's value is nowhere in the table.
    token = cookie.split(";")[0].split("=", 1)[1]
    with site.app.engine.connect() as conn:
        stored = [bytes(r[0]) for r in conn.execute(select(web_sessions.c.token_sha256))]
    assert stored and all(token.encode() not in s for s in stored)


def test_secure_cookies_when_configured(site: Site) -> None:
    from peerwatch.web.context import WebConfig
    from peerwatch.web.security import CookieConfig

    site.config = WebConfig(cookies=CookieConfig(secure=True))
    client = site.client()
    page = client.get("/login")
    assert page.headers["set-cookie"].startswith("__Host-pw_login=")
    assert "secure" in page.headers["set-cookie"].lower()


def test_wrong_password_and_unknown_name_look_the_same(site: Site) -> None:
    client = site.client()
    bad = login(client, "coord", "not the password at all")
    unknown = login(client, "nobody", PASSWORD)
    for r in (bad, unknown):
        assert r.status_code == 401
        assert "Wrong name or password." in r.text
    assert client.cookies.get("pw_session") is None
    assert client.get("/leads", follow_redirects=False).headers["location"] == "/login"
    actions = _actions(site)
    assert ("login.failed", "user:coord") in actions and ("login.failed", "user:nobody") in actions


def test_login_is_rate_limited_per_account_then_frees_after_the_window(site: Site) -> None:
    client = site.client()
    for _ in range(5):
        assert login(client, "inv75", "wrong password here").status_code == 401
    limited = login(client, "inv75")  # the right password is not even checked now
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 15 * 60
    assert ("login.limited", "user:inv75") in _actions(site)
    # Another account from the same address is not blocked by inv75's failures.
    assert login(site.client(), "inv13").status_code == 303
    site.clock.advance(15 * 60_000 + 1)
    assert login(client, "inv75").status_code == 303


def test_login_is_rate_limited_per_address_across_accounts(site: Site) -> None:
    client = site.client()
    for i in range(20):
        r = login(client, f"guess{i}", "wrong password here")
        assert r.status_code == 401
    # Every name is now refused from this address (TestClient's address is "testclient").
    assert login(client, "coord").status_code == 429


def test_totp_second_factor(site: Site) -> None:
    _user, secret = site.app.accounts.add_user("withtotp", "coordinator", PASSWORD, with_totp=True)
    assert secret is not None
    client = site.client()
    first = login(client, "withtotp")
    assert first.headers["location"] == "/login/totp"
    # Half signed in: no data yet.
    assert client.get("/leads", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/v1/me").status_code == 401
    page = client.get("/login/totp")
    csrf = csrf_of(page.text)
    code = pyotp.TOTP(secret).at(site.clock.now // 1000)
    wrong = "000000" if code != "000000" else "111111"
    bad = client.post("/login/totp", data={"code": wrong, "csrf": csrf}, follow_redirects=False)
    assert bad.status_code == 401
    ok = client.post("/login/totp", data={"code": code, "csrf": csrf}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert client.get("/api/v1/me").json()["name"] == "withtotp"
    # The same code again (a replay from another browser) is refused.
    other = site.client()
    login(other, "withtotp")
    again = other.post(
        "/login/totp",
        data={"code": code, "csrf": csrf_of(other.get("/login/totp").text)},
        follow_redirects=False,
    )
    assert again.status_code == 401
    actions = [a for a, o in _actions(site) if o == "user:withtotp"]
    assert actions == [
        "login.password-ok",
        "login.failed",
        "login.ok",
        "login.password-ok",
        "login.failed",
    ]


def test_pending_totp_session_expires(site: Site) -> None:
    site.app.accounts.add_user("late", "auditor", PASSWORD, with_totp=True)
    client = site.client()
    login(client, "late")
    site.clock.advance(5 * 60_000 + 1)
    assert client.get("/login/totp", follow_redirects=False).headers["location"] == "/login"


def test_logout_ends_the_session_server_side(site: Site) -> None:
    client = site.signed_in("coord")
    token = client.cookies["pw_session"]
    csrf = csrf_of(client.get("/leads").text)
    out = client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    # The old cookie, replayed, opens nothing.
    replay = site.client()
    replay.cookies.set("pw_session", token)
    assert replay.get("/api/v1/me").status_code == 401
    assert ("logout", "user:coord") in _actions(site)


def test_session_expires_and_disabled_accounts_are_out(site: Site) -> None:
    client = site.signed_in("coord")
    assert client.get("/api/v1/me").status_code == 200
    site.app.accounts.set_disabled("coord", True)
    assert client.get("/api/v1/me").status_code == 401
    assert login(site.client(), "coord").status_code == 401
    site.app.accounts.set_disabled("coord", False)
    client = site.signed_in("coord")
    site.clock.advance(8 * 3_600_000)
    assert client.get("/api/v1/me").status_code == 401


def test_every_post_form_refuses_a_missing_or_wrong_csrf_token(site: Site) -> None:
    posts = sorted(
        r.path
        for r in pages.router.routes
        if isinstance(r, APIRoute) and "POST" in (r.methods or set())
    )
    assert posts == ["/admin/users", "/login", "/login/totp", "/logout"]
    admin = site.signed_in("admin")
    good = csrf_of(admin.get("/admin/users").text)
    form = {"name": "x1", "role": "auditor", "password": PASSWORD, "code": "123456"}
    for path in posts:
        for token in (None, "forged", good[:-1] + ("0" if good[-1] != "0" else "1")):
            data = dict(form) if token is None else {**form, "csrf": token}
            r = admin.post(path, data=data, follow_redirects=False)
            assert r.status_code == 403, (path, token, r.status_code)
            assert "CSRF" in r.text
    assert site.app.accounts.user("x1") is None
    # Signed out, the login form's token must match its cookie (double submit).
    fresh = site.client()
    fresh.get("/login")
    r = fresh.post("/login", data={"name": "coord", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403
    # And the right token works.
    ok = admin.post("/admin/users", data={**form, "csrf": good})
    assert ok.status_code == 200 and site.app.accounts.user("x1") is not None


def test_session_api_writes_need_the_csrf_header_tokens_do_not(site: Site) -> None:
    admin = site.signed_in("admin")
    body = {"name": "apiuser", "role": "auditor", "password": PASSWORD}
    assert admin.post("/api/v1/users", json=body).status_code == 403
    csrf = csrf_of(admin.get("/admin/users").text)
    r = admin.post("/api/v1/users", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 and r.json()["user"]["role"] == "auditor"
    _t, value = site.app.accounts.add_token("adminscript", "admin")
    bearer = site.client()
    r = bearer.post(
        "/api/v1/users",
        json={**body, "name": "apiuser2"},
        headers={"Authorization": f"Bearer {value}"},
    )
    assert r.status_code == 201


def test_security_headers_on_pages_and_api(site: Site) -> None:
    client = site.client()
    for path in ("/login", "/api/v1/me", "/api/openapi.json", "/static/style.css"):
        h = client.get(path).headers
        assert h["content-security-policy"].startswith("default-src 'self'")
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
    assert client.get("/login").headers["cache-control"] == "no-store"
    # Nothing on a page loads from another origin.
    html = client.get("/login").text
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_what_users_type_is_escaped_in_pages(site: Site) -> None:
    admin = site.signed_in("admin")
    csrf = csrf_of(admin.get("/admin/users").text)
    r = admin.post(
        "/admin/users",
        data={"name": "<script>x</script>", "role": "auditor", "password": PASSWORD, "csrf": csrf},
    )
    assert r.status_code == 400
    assert "&lt;script&gt;x&lt;/script&gt;" in r.text and "<script>x" not in r.text
