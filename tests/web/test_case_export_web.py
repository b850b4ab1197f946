"""The case export button and the downloads: the package is the CLI's (verified here with
`verify_case`), its export is audited with the manifest's SHA-256, and every download is checked
against the reader's scope (another unit's package is 404 like a missing one) and audited."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

from peerwatch.cases.verify import verify_case
from tests.web.conftest import Site, csrf_of


def _export_from_page(site: Site, name: str, target_id: int) -> str:
    client = site.signed_in(name)
    page = client.get(f"/leads/{target_id}")
    assert 'id="export-case"' in page.text
    r = client.post(
        f"/leads/{target_id}/export", data={"csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/leads/{target_id}#case"
    after = client.get(f"/leads/{target_id}").text
    found = re.search(r'href="/cases/(T-[0-9]+-[0-9T]+Z)/case\.pdf"', after)
    assert found is not None, "the page offers no download"
    return found[1]


def test_export_button_writes_an_audited_package(site: Site) -> None:
    target_id = site.targets["U75"][0]
    name = _export_from_page(site, "inv75", target_id)
    folder = site.app.settings.home / "cases" / name
    assert name.startswith(f"T-{target_id:06d}-")
    assert verify_case(folder, {}).ok
    manifest_sha = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    (entry,) = [e for e in site.app.audit.iter_entries() if e.action == "case.export"]
    assert (entry.actor, entry.unit, entry.object) == ("inv75", "U75", f"target:{target_id}")
    assert entry.detail["manifest_sha256"] == manifest_sha
    assert entry.detail["target"] == f"T-{target_id:06d}"
    assert json.loads((folder / "case.json").read_text("utf-8"))["exported_by"] == "inv75"

    client = site.signed_in("inv75")
    pdf = client.get(f"/cases/{name}/case.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
    doc = client.get(f"/cases/{name}/case.json").json()
    assert doc["target"]["id"] == target_id
    archive = client.get(f"/cases/{name}/{name}.zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        names = set(z.namelist())
        assert f"{name}/manifest.json" in names and f"{name}/evidence/records.jsonl" in names
        assert z.read(f"{name}/manifest.json") == (folder / "manifest.json").read_bytes()
    downloads = [e for e in site.app.audit.iter_entries() if e.action == "case.download"]
    assert [e.detail["file"] for e in downloads] == ["case.pdf", "case.json", f"{name}.zip"]
    assert site.app.audit.verify().ok


def test_other_units_cannot_export_or_download(site: Site, tmp_path: Path) -> None:
    target_id = site.targets["U75"][0]
    name = _export_from_page(site, "inv75", target_id)
    inv13 = site.signed_in("inv13")
    csrf = csrf_of(inv13.get("/").text)
    missing = f"T-{target_id:06d}-20250101T000000000Z"
    for file in ("case.pdf", "case.json", f"{name}.zip"):
        r = inv13.get(f"/cases/{name}/{file}")
        assert r.status_code == 404 and "no such case" in r.text, file
        assert inv13.get(f"/api/v1/cases/{name}/{file}").json() == {"detail": "no such case"}
        entry = site.app.audit.latest(1)[0]
        assert entry.action == "case.denied" and entry.detail["reason"] == "outside-scope"
    # A package of another unit answers exactly like one that does not exist.
    a = inv13.get(f"/api/v1/cases/{name}/case.json")
    b = inv13.get(f"/api/v1/cases/{missing}/case.json")
    assert (a.status_code, a.json()) == (b.status_code, b.json())
    assert site.app.audit.latest(1)[0].detail["reason"] == "missing"
    # Names that are not package names are refused before anything is read.
    assert inv13.get("/cases/..%2F..%2Fetc/case.json").status_code in (404, 422)
    assert inv13.get(f"/cases/{name}/manifest.json").status_code == 422

    before = sorted(p.name for p in (site.app.settings.home / "cases").iterdir())
    for tid in site.targets["U75"] + site.targets["-"]:
        r = inv13.post(f"/leads/{tid}/export", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 404 and "no such target" in r.text
        r = inv13.post(f"/api/v1/targets/{tid}/export", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404
    # Without the CSRF token nothing is exported either.
    own = site.targets["U13"][0]
    assert inv13.post(f"/leads/{own}/export", follow_redirects=False).status_code == 403
    assert sorted(p.name for p in (site.app.settings.home / "cases").iterdir()) == before
    assert not [e for e in site.app.audit.iter_entries() if e.action == "case.export"][1:]
    for role in ("auditor", "admin"):
        client = site.signed_in(role)
        assert client.get(f"/cases/{name}/case.pdf").status_code == 403
    assert site.app.audit.verify().ok


def test_api_export_with_a_token(site: Site) -> None:
    _t, value = site.app.accounts.add_token("exporter", "coordinator")
    headers = {"Authorization": f"Bearer {value}"}
    client = site.client()
    target_id = site.targets["-"][0]
    r = client.post(f"/api/v1/targets/{target_id}/export", headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["target_id"] == target_id and body["observations"] == 1
    urls = [d["url"] for d in body["downloads"]]
    assert urls[0] == f"/api/v1/cases/{body['case']}/case.pdf"
    got = client.get(urls[1], headers=headers)
    assert got.status_code == 200 and got.json()["target"]["id"] == target_id
    folder = site.app.settings.home / "cases" / body["case"]
    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert body["manifest_sha256"] == digest
    entry = [e for e in site.app.audit.iter_entries() if e.action == "case.export"][-1]
    assert entry.actor == "token:exporter" and entry.detail["manifest_sha256"] == digest
