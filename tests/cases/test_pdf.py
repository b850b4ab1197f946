"""The PDF report: renders to PNG pages with pdftoppm, and its text holds the facts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from peerwatch.cases.pdf import PdfConfig, render_html
from peerwatch.evidence.bundle import verify_bundle
from tests.cases.conftest import CGNAT, PARIS, Lab
from tests.cases.test_export import _export


def _pdftotext(pdf: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) not installed")
    done = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_pdf_pages_render_as_png(lab: Lab) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed")
    out = lab.tmp / "case"
    report = _export(lab, PARIS, out)
    pngs = lab.tmp / "png"
    pngs.mkdir()
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", str(out / "case.pdf"), str(pngs / "page")], check=True
    )
    pages = sorted(pngs.glob("page-*.png"))
    assert len(pages) == report.pdf_pages > 0
    for page in pages:
        assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert page.stat().st_size > 5_000  # something is drawn on every page


def test_pdf_text_holds_ip_port_utc_time_and_sections(lab: Lab) -> None:
    out = lab.tmp / "case"
    report = _export(lab, PARIS, out)
    text = _pdftotext(out / "case.pdf")
    assert PARIS in text and "51413" in text
    assert "2025-11-24T16:00:01.234Z" in text  # an observation, to the millisecond
    assert "2025-11-24T16:00:01Z" in text  # its requisition line, to the second
    for heading in (
        f"Case package {report.label}",
        "Summary",
        "Score explanation",
        "Placement",
        "Identity links",
        "Hash matches and list provenance",
        "Observations",
        "ISP requisition lines",
        "Lead history",
        "Evidence verification",
    ):
        assert heading in text, heading
    assert "hashes and metadata only — no content" in text
    assert f"page 1 of {report.pdf_pages}" in text
    assert "btih:" + "0" * 39 + "1" in text and "cases.csv" in text and "line 2" in text
    assert "GeoLite2-City built 2026-11-01" in text
    assert "bash evidence/verify.sh" in text
    # Each sensor's key fingerprint, to compare with the published one.
    for fingerprint in verify_bundle(out / "evidence").key_fingerprints.values():
        assert fingerprint in text


def test_cgnat_pdf_carries_the_caveat(lab: Lab) -> None:
    out = lab.tmp / "case"
    _export(lab, CGNAT, out)
    text = " ".join(_pdftotext(out / "case.pdf").split())
    assert "Carrier-grade NAT" in text and "40123" in text and CGNAT in text


def test_long_observation_lists_are_cut_in_the_pdf_only(lab: Lab) -> None:
    """With more observations than the table shows, the PDF says so; case.json has them all."""
    import json

    out = lab.tmp / "case"
    _export(lab, PARIS, out)
    doc = json.loads((out / "case.json").read_text())
    html = render_html(doc, case_json_sha256="0" * 64, config=PdfConfig(max_rows=2))
    assert "The first 2 of 5 are shown" in html
    assert f"The first 2 of {len(doc['requisition'])} are shown" in html
    assert len(doc["observations"]) == 5
    assert html.count('<tr class="observation">') == 2
    assert html.count('<tr class="requisition-line">') == 2


def test_values_are_escaped_not_interpreted(lab: Lab) -> None:
    """A client name is whatever the peer sent: it must come out as text, never as markup."""
    import json

    out = lab.tmp / "case"
    _export(lab, PARIS, out)
    doc = json.loads((out / "case.json").read_text())
    doc["observations"][1]["client"] = '<img src="http://192.0.2.1/x.png">'
    html = render_html(doc, case_json_sha256="0" * 64, config=PdfConfig())
    assert "<img" not in html and "&lt;img src=" in html
