"""Watchlist management in the web app: the admins' import (background, with progress and the
importer's file/line/field errors), the list overview (counts and provenance, never a hash or an
item), who may do what, and the audit entries. Lists are generated benign files (lab/content.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from peerwatch.lab.content import make_files
from peerwatch.web.site import create_app
from tests.web.conftest import Site, csrf_of, login


def _csv(tmp: Path, count: int, seed: int) -> tuple[bytes, list[Any]]:
    files = make_files(tmp / f"benign-{seed}", count, seed=seed, max_size=2000)
    rows = ["md5,sha1,category,name"] + [
        f"{f.md5},{f.sha1},test-{seed},{f.path.name}" for f in files
    ]
    return ("\n".join(rows) + "\n").encode(), files


def _wait(client: TestClient, url: str, headers: dict[str, str] | None = None) -> Any:
    for _ in range(200):
        r = client.get(url, headers=headers or {})
        assert r.status_code == 200, r.text
        if r.json()["state"] in ("done", "failed"):
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"{url} did not finish")


def _import_page(client: TestClient, data: dict[str, str], content: bytes, name: str) -> Any:
    page = client.get("/watchlist")
    assert page.status_code == 200
    return client.post(
        "/watchlist/imports",
        data={"csrf": csrf_of(page.text), **data},
        files={"file": (name, content, "text/csv")},
        follow_redirects=False,
    )


def test_admin_imports_with_progress_and_sees_counts_not_hashes(site: Site, tmp_path: Path) -> None:
    admin = site.signed_in("admin")
    content, files = _csv(tmp_path, 5, seed=11)
    r = _import_page(admin, {"list": "benign one", "format": "auto"}, content, "one.csv")
    assert r.status_code == 303, r.text
    job_url = r.headers["location"]
    job_id = job_url.rsplit("/", 1)[1]
    done = _wait(admin, f"/api/v1/watchlist/imports/{job_id}")
    assert done["state"] == "done", done
    assert done["result"]["version"] == 1 and done["result"]["items"] == 5
    assert done["result"]["hashes"] == 10
    progress = admin.get(job_url)
    assert progress.status_code == 200 and "Version 1 is active" in progress.text
    assert "Refresh" not in progress.headers  # finished: no more reloading

    page = admin.get("/watchlist")
    assert "benign one" in page.text and "one.csv" in page.text
    assert 'id="watchlist-import"' in page.text
    for f in files:
        assert f.md5 not in page.text and f.sha1 not in page.text and f.path.name not in page.text
    api = admin.get("/api/v1/watchlist").json()
    assert api["kinds"] == {"md5": 5, "sha1": 5}
    (lst,) = api["lists"]
    assert lst["name"] == "benign one" and lst["active"] == 1
    assert lst["versions"][0]["sources"][0]["file"] == "one.csv"
    assert lst["versions"][0]["sources"][0]["format"] == "csv"
    kept = site.app.settings.home / "watchlist" / "uploads" / job_id / "one.csv"
    assert kept.read_bytes() == content  # the version's provenance names this file
    # A second version replaces the first; both stay listed, newest first.
    content2, _ = _csv(tmp_path, 3, seed=12)
    r = _import_page(admin, {"list": "benign one", "format": "csv"}, content2, "two.csv")
    assert (
        _wait(admin, f"/api/v1/watchlist/imports/{r.headers['location'].rsplit('/', 1)[1]}")[
            "result"
        ]["replaced_version"]
        == 1
    )
    api = admin.get("/api/v1/watchlist").json()
    assert [(v["version"], v["active"]) for v in api["lists"][0]["versions"]] == [
        (2, True),
        (1, False),
    ]
    assert api["kinds"] == {"md5": 3, "sha1": 3}

    actions = [e.action for e in site.app.audit.iter_entries() if e.actor == "admin"]
    for action in (
        "watchlist.view",
        "watchlist.import",
        "watchlist.import-finished",
        "watchlist.import-view",
    ):
        assert action in actions, action
    assert site.app.audit.verify().ok


def test_an_invalid_record_names_file_line_and_field(site: Site, tmp_path: Path) -> None:
    admin = site.signed_in("admin")
    content, files = _csv(tmp_path, 3, seed=21)
    bad = content.replace(files[1].md5.encode(), b"zz" + files[1].md5[2:].encode())
    r = _import_page(admin, {"list": "broken", "format": "csv"}, bad, "cases.csv")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    failed = _wait(admin, f"/api/v1/watchlist/imports/{job_id}")
    assert failed["state"] == "failed"
    err = failed["error"]
    assert err["source"] == "cases.csv" and err["location"] == "line 3" and err["field"] == "md5"
    assert err["message"].startswith("cases.csv:line 3: field 'md5'"), err
    page = admin.get(r.headers["location"])
    assert "Nothing was imported" in page.text and "line 3" in page.text
    assert admin.get("/api/v1/watchlist").json()["lists"] == []  # nothing half-written
    assert not (site.app.settings.home / "watchlist" / "uploads" / job_id).exists()
    # With skip_invalid the rest is imported and the bad record reported.
    r = _import_page(
        admin, {"list": "broken", "format": "csv", "skip_invalid": "true"}, bad, "cases.csv"
    )
    done = _wait(admin, f"/api/v1/watchlist/imports/{r.headers['location'].rsplit('/', 1)[1]}")
    assert done["state"] == "done" and done["result"]["items"] == 2
    assert [(s["location"], s["field"]) for s in done["skipped"]] == [("line 3", "md5")]
    # Refused before anything runs: a bad list name, an unknown format.
    assert _import_page(admin, {"list": "../x"}, content, "a.csv").status_code == 400
    assert _import_page(admin, {"list": "ok", "format": "exe"}, content, "a.csv").status_code == 400
    assert _import_page(admin, {"list": "derived"}, content, "a.csv").status_code == 400


def test_who_may_see_and_import(site: Site, tmp_path: Path) -> None:
    content, _ = _csv(tmp_path, 2, seed=31)
    for name, view, imports in (
        ("coord", 200, 403),
        ("inv75", 403, 403),
        ("auditor", 403, 403),
        ("admin", 200, 202),
    ):
        role, unit = {"coord": ("coordinator", None), "inv75": ("investigator", "U75")}.get(
            name, (name, None)
        )
        _t, value = site.app.accounts.add_token(f"wl-{name}", role, unit=unit)
        h = {"Authorization": f"Bearer {value}"}
        client = site.client()
        assert client.get("/api/v1/watchlist", headers=h).status_code == view, name
        r = client.post(
            "/api/v1/watchlist/imports",
            data={"list": f"from-{name}"},
            files={"file": ("l.csv", content, "text/csv")},
            headers=h,
        )
        assert r.status_code == imports, (name, r.text)
        if imports == 202:
            done = _wait(client, f"/api/v1/watchlist/imports/{r.json()['id']}", h)
            assert done["state"] == "done" and done["by"] == "token:wl-admin"
            assert done["list"] == "from-admin"
            assert client.get("/api/v1/watchlist/imports/" + "0" * 32, headers=h).status_code == 404
        signed = site.signed_in(name)
        assert signed.get("/watchlist").status_code == view, name
    assert site.app.audit.verify().ok


def test_the_progress_page_reloads_itself_while_the_import_waits(
    site: Site, tmp_path: Path
) -> None:
    web = create_app(site.app, site.config)
    imports = web.state.watchlist_imports
    client = TestClient(web)
    login(client, "admin")
    content, _ = _csv(tmp_path, 2, seed=41)
    with imports._one_at_a_time:  # another import is running: this one waits its turn
        r = _import_page(client, {"list": "queued"}, content, "q.csv")
        page = client.get(r.headers["location"])
        assert page.status_code == 200 and page.headers["refresh"] == "2"
        assert 'data-state="queued"' in page.text
    imports.wait_all()
    page = client.get(r.headers["location"])
    assert 'data-state="done"' in page.text and "refresh" not in page.headers
