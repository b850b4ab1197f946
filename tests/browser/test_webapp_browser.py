"""The web app in a real browser (Debian's chromium, driven by Playwright), over the demo's data:
sign in, the ranked list, one target. Hashes and metadata only, so the pages are checked for what
they show (addresses, scores, content keys), never for content."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import zipfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from tests.browser.conftest import WebApp, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_sign_in_refuses_a_wrong_password_then_lands_on_the_ranked_list(
    page: Page, webapp: WebApp
) -> None:
    page.goto("/leads")
    assert page.url.endswith("/login")  # the list needs a session
    page.get_by_label("Name").fill(webapp.login.user)
    page.get_by_label("Password").fill(webapp.login.password + "-wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.locator("p.error").inner_text() == "Wrong name or password."
    assert not [c for c in page.context.cookies() if c["name"] == "pw_session"]

    sign_in(page, webapp)
    assert page.locator("h1").inner_text() == "Leads"
    assert f"{webapp.login.user} (coordinator)" in page.locator("header").inner_text()
    rows = page.locator("main table tbody tr")
    assert rows.count() == webapp.targets > 0
    scores = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(rows.count())]
    assert scores == sorted(scores, reverse=True)  # ranked, highest score first
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        assert re.fullmatch(r"T-\d{6}", cells.nth(0).inner_text())
        # the demo's lab peers: BitTorrent on 127.0.14.x, aMule on 127.0.114.x
        assert cells.nth(4).inner_text().startswith(("127.0.14.", "127.0.114."))
        assert cells.nth(3).inner_text().startswith("LAB-")  # routed to a lab unit
    session = [c for c in page.context.cookies() if c["name"] == "pw_session"]
    assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"


def test_open_a_target_from_the_list(page: Page, webapp: WebApp) -> None:
    sign_in(page, webapp)
    first = page.locator("main table tbody tr").first
    label = first.locator("td").first.inner_text()
    address = first.locator("td").nth(4).inner_text()
    first.get_by_role("link", name=label).click()
    page.wait_for_url(re.compile(r"/leads/\d+$"))
    assert page.locator("h1").inner_text() == label
    assert "Hashes and metadata only" in page.locator("p.notice").inner_text()
    summary = page.locator("main table").first
    assert address in summary.inner_text()
    keys = summary.locator("tr", has_text="Content keys").locator("td").inner_text().split()
    assert keys and all(re.fullmatch(r"(btih|btmh|ed2k):[0-9a-f]+", k) for k in keys)
    heading = page.locator("h2", has_text=re.compile(r"^Observations \(\d+\)$"))
    count = int(re.sub(r"\D", "", heading.inner_text()))
    assert count > 0
    table = page.locator("h2:has-text('Observations (') + table")
    assert table.locator("tbody tr").count() == count
    assert address in table.locator("tbody").inner_text()


def test_the_map_counts_the_open_leads_of_the_list(page: Page, webapp: WebApp) -> None:
    sign_in(page, webapp)
    listed: dict[str, int] = {}
    rows = page.locator("main table tbody tr")
    for i in range(rows.count()):
        code = rows.nth(i).locator("td").nth(2).inner_text().split()[0]
        listed[code] = listed.get(code, 0) + 1
    assert sum(listed.values()) == webapp.targets

    page.goto("/map")
    drawing = page.locator("#map")
    drawing.wait_for(state="visible")
    assert drawing.evaluate("e => e.tagName.toLowerCase()") == "svg"
    box = drawing.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 300
    # Every département is drawn; the ones with leads carry their count and open their list.
    shapes = page.locator("#map a[data-code]")
    assert shapes.count() >= 96  # metropolitan départements at least, all in a coordinator's scope
    counted = {
        str(a.get_attribute("data-code")): int(str(a.get_attribute("data-open")))
        for a in shapes.all()
        if a.get_attribute("data-open") != "0"
    }
    assert counted == listed
    for code in counted:
        link = page.locator(f'#map a[data-code="{code}"]')
        assert link.get_attribute("href") == f"/leads?jurisdiction={code}"
    # Coloured, not blank: the zero class and at least one class with leads are painted.
    image = Image.open(io.BytesIO(drawing.screenshot())).convert("RGB")
    colours = Counter({colour: n for n, colour in image.getcolors(maxcolors=1 << 24) or []})
    assert colours[_rgb("#fef0d9")] > 1000  # départements without a lead
    assert sum(n for c, n in colours.items() if c in _WITH_LEADS) > 50

    # The jurisdiction table under the map opens the list narrowed to that département.
    code = sorted(counted)[0]
    page.locator("#map-table").get_by_role("link", name=code, exact=True).click()
    page.wait_for_url(re.compile(rf"/leads\?jurisdiction={code}$"))
    narrowed = page.locator("main table tbody tr")
    assert narrowed.count() == counted[code]
    for i in range(narrowed.count()):
        assert narrowed.nth(i).locator("td").nth(2).inner_text().split()[0] == code


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


# The map's palette for one lead or more (peerwatch.web.map.PALETTE[1:]).
_WITH_LEADS = {_rgb(c) for c in ("#fdd49e", "#fdbb84", "#fc8d59", "#e34a33", "#b30000")}


def _open_target(page: Page, webapp: WebApp, row: int) -> tuple[str, str]:
    """Sign in, open the list's `row`-th target; its label and unit."""
    sign_in(page, webapp)
    cells = page.locator("main table tbody tr").nth(row).locator("td")
    label, unit = cells.nth(0).inner_text(), cells.nth(3).inner_text()
    cells.nth(0).get_by_role("link").click()
    page.wait_for_url(re.compile(r"/leads/\d+$"))
    assert page.locator("h1").inner_text() == label
    return label, unit


def test_claim_a_target_for_its_unit(page: Page, webapp: WebApp) -> None:
    label, unit = _open_target(page, webapp, 0)
    assert page.locator("#lead-state-value").inner_text() == "new"
    assert page.locator("#lead-unit").inner_text() == "-"
    assert page.locator("#lead-history").inner_text().count("Nobody has claimed") == 1
    # A coordinator claims on behalf of a unit: the target's own unit is proposed.
    assert page.locator("#claim-unit").input_value() == unit
    page.locator("#claim-form").get_by_label("Note").fill("browser test claim")
    page.locator("#claim").click()
    page.wait_for_url(re.compile(r"/leads/\d+#lead$"))
    assert page.locator("h1").inner_text() == label
    assert page.locator("#lead-state-value").inner_text() == "claimed"
    assert page.locator("#lead-unit").inner_text() == unit
    history = page.locator("#lead-history tbody tr")
    assert history.count() == 1
    row = history.first.inner_text()
    assert webapp.login.user in row and unit in row and "browser test claim" in row
    # Claimed: it cannot be claimed again, it can be released or transferred.
    assert page.locator("#claim").count() == 0
    assert page.locator("#release").count() == 1 and page.locator("#transfer").count() == 1
    # The claim holds on a fresh load, and the list still shows the target (claimed is open).
    page.reload()
    assert page.locator("#lead-state-value").inner_text() == "claimed"


def test_export_the_case_package_and_read_its_pdf(
    page: Page, webapp: WebApp, tmp_path: Path
) -> None:
    label, _unit = _open_target(page, webapp, 0)
    assert page.locator("#case-exports").count() == 0
    page.locator("#export-case").click()
    page.wait_for_url(re.compile(r"/leads/\d+#case$"))
    exports = page.locator("#case-exports tbody tr")
    assert exports.count() == 1
    cells = exports.first.locator("td")
    name = cells.nth(0).inner_text()
    assert name.startswith(f"{label}-")
    assert webapp.login.user in cells.nth(2).inner_text()
    manifest_sha256 = cells.nth(3).inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", manifest_sha256)

    with page.expect_download() as pdf_download:
        cells.nth(4).get_by_role("link", name="case.pdf").click()
    assert pdf_download.value.suggested_filename == "case.pdf"
    pdf = tmp_path / "case.pdf"
    pdf_download.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF-")

    # The PDF's pages as PNG (poppler's pdftoppm): as many as the PDF says, none of them blank.
    info = subprocess.run(
        ["pdfinfo", str(pdf)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)$", info, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert pages > 0
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=120,
    )
    pngs = sorted(tmp_path.glob("page*.png"))
    assert len(pngs) == pages
    for png in pngs:
        with Image.open(png) as image:
            grey = image.convert("L")
            histogram = grey.histogram()
            dark = sum(histogram[:160])  # text, rules, table lines
            total = grey.width * grey.height
            assert grey.width > 300 and grey.height > 300
            assert 0.002 * total < dark < 0.6 * total, f"{png.name} looks blank or black"

    # The whole package: its manifest is the one the page pins, its PDF the one downloaded.
    with page.expect_download() as zip_download:
        cells.nth(4).get_by_role("link", name="whole package (zip)").click()
    assert zip_download.value.suggested_filename == f"{name}.zip"
    archive = tmp_path / "case.zip"
    zip_download.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        manifest = z.read(f"{name}/manifest.json")
        assert hashlib.sha256(manifest).hexdigest() == manifest_sha256
        assert z.read(f"{name}/case.pdf") == pdf.read_bytes()
