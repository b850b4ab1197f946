"""Screenshots of the web app for the docs: docs/screenshots/{map,leads,target}.png.

Runs the demo without serving (`peerwatch demo --no-serve`, its lab on 127.0.14.x) in a temporary
home, serves that home on a free loopback port, signs in as the demo coordinator and photographs
the pages with Playwright driving Debian's chromium (never a downloaded browser). Only loopback is
touched; the pages show hashes and metadata only. Run from the checkout:

    .venv/bin/python scripts/screenshots.py          # or: make screenshots
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' demo helpers (tests/demo_server.py)

from tests.demo_server import free_port, prepare_home, served  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
# The browser resolves no name and starts no background service: nothing leaves loopback.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--no-first-run",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--lab-net", default="127.0.14.", help="loopback /24 of the demo's lab")
    parser.add_argument("--sensor-ip", default="127.0.14.202")
    args = parser.parse_args(argv)
    if not CHROMIUM.is_file():
        print(f"{CHROMIUM} is missing: apt-get install chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peerwatch-shots-") as tmp:
        home = Path(tmp) / "home"
        print("preparing a demo home (lab, sensor, evidence, leads) ...")
        login, _ = prepare_home(home, args.lab_net, args.sensor_ip)
        with served(home, free_port()) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto("/login")
            page.get_by_label("Name").fill(login.user)
            page.get_by_label("Password").fill(login.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"/leads$"))
            shots: list[Path] = []

            response = page.goto("/map")
            if response is not None and response.ok and page.locator("#map").count():
                # Tall enough for the overseas départements' panels under the main one.
                page.set_viewport_size({"width": 1280, "height": 1100})
                shots.append(_shot(page, args.out / "map.png"))
                page.set_viewport_size({"width": 1280, "height": 800})
            else:
                print("no map page (/map with id=map) yet: map.png not made", file=sys.stderr)

            page.goto("/leads")
            shots.append(_shot(page, args.out / "leads.png"))
            page.locator("main table tbody tr a").first.click()
            page.wait_for_url(re.compile(r"/leads/\d+$"))
            shots.append(_shot(page, args.out / "target.png"))
            browser.close()
    for path in shots:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


def _shot(page: Page, path: Path, *, full_page: bool = False) -> Path:
    page.screenshot(path=str(path), full_page=full_page)
    return path


if __name__ == "__main__":
    sys.exit(main())
