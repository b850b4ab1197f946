"""Browser tests: Playwright drives Debian's chromium (never a downloaded browser) against a
`peerwatch serve` subprocess on a free loopback port, over a home the demo prepared (its lab on
127.0.14.x, then stopped: the pages read the database only).

Without chromium, Playwright or pdftoppm these tests skip with the reason locally; in CI (CI set)
they fail instead, since .ci/run installs chromium and poppler-utils.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.demo_server import Credentials, free_port, prepare_home, served
from tests.interop.conftest import require_lab_tools
from tests.shared_data import require_boundaries

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
LAB_NET = "127.0.14."
SENSOR_IP = "127.0.14.201"
#: Chromium resolves no name at all (the tests use 127.0.0.1 literally) and starts none of its
#: background services: nothing leaves loopback.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
]


def require_browser() -> None:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip extra 'dev')")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    for tool in ("pdftoppm", "pdfinfo"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package poppler-utils)")
    if missing:
        reason = "browser test tools not installed: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the browser tests)")
        pytest.skip(reason)


@dataclass(frozen=True)
class WebApp:
    url: str  # http://127.0.0.1:PORT/
    login: Credentials
    home: Path
    targets: int  # the number of targets the demo listed


@pytest.fixture(scope="module")
def webapp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    """The demo's home (`demo --no-serve`) served by `peerwatch serve` for the module."""
    require_browser()
    require_lab_tools(tracker=False)
    require_boundaries()
    home = tmp_path_factory.mktemp("browser") / "home"
    login, output = prepare_home(home, LAB_NET, SENSOR_IP)
    m = re.search(r"^  (\d+) targets, \d+ routed", output, re.MULTILINE)
    assert m is not None, output
    with served(home, free_port()) as url:
        yield WebApp(url, login, home, int(m.group(1)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, webapp: WebApp) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the web app, downloads allowed."""
    context = browser.new_context(base_url=webapp.url, accept_downloads=True)
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Page, app: WebApp) -> None:
    page.goto("/login")
    page.get_by_label("Name").fill(app.login.user)
    page.get_by_label("Password").fill(app.login.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/leads$"))
