"""`case.pdf`: the case document rendered with Jinja2 templates and WeasyPrint.

The templates (`templates/`) are a base layout and one partial per section, each rendering a part
of the case.json object; the web app can include the same partials. Nothing is fetched: the style
sheet is inlined, fonts are the system's, and the URL fetcher refuses every URL, so rendering makes
no network traffic whatever a value in the document holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from peerwatch.errors import PeerwatchError

TEMPLATES = Path(__file__).parent / "templates"


class CaseRenderError(PeerwatchError):
    """The PDF could not be rendered (WeasyPrint missing or failing)."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class PdfConfig:
    # Rows of the observations and requisition tables; all of them are in case.json (and the
    # requisition lines in requisition.csv). WeasyPrint lays out ~100 rows a second.
    max_rows: int = 1000
    page_size: str = "A4"  # CSS page size: "A4", "letter"


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the case templates (also for the web app's pages)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "xml"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dash"] = lambda v: "–" if v is None or v == "" or v == [] else v
    env.filters["short"] = _short
    env.filters["basename"] = lambda p: Path(str(p)).name if p else p
    return env


def _short(value: str | None, keep: int = 16) -> str:
    """A long hex value cut for a table cell (the full value is in the hash table and JSON)."""
    if value is None:
        return "–"
    return value if len(value) <= keep + 1 else value[:keep] + "…"


def render_html(doc: Mapping[str, Any], *, case_json_sha256: str, config: PdfConfig) -> str:
    return (
        environment()
        .get_template("case.html")
        .render(
            case=doc,
            case_json_sha256=case_json_sha256,
            shown=doc["observations"][: config.max_rows],
            shown_requisition=doc["requisition"][: config.max_rows],
            page_size=config.page_size,
        )
    )


def _refuse(url: str, *args: object, **kwargs: object) -> dict[str, Any]:
    raise CaseRenderError(f"the case report may not fetch {url!r}: no external resources")


def write_pdf(
    doc: Mapping[str, Any], path: Path, *, case_json_sha256: str, config: PdfConfig | None = None
) -> int:
    """Render the case document to `path`; return the number of pages."""
    config = config or PdfConfig()
    html = render_html(doc, case_json_sha256=case_json_sha256, config=config)
    try:
        # Imported here: WeasyPrint takes a second to import, and only this command needs it.
        import weasyprint  # type: ignore[import-untyped]  # no type stubs published
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise CaseRenderError(f"WeasyPrint is needed to write the PDF: {exc}") from None
    document = weasyprint.HTML(string=html, url_fetcher=_refuse, base_url=None).render()
    document.write_pdf(str(path))
    return len(document.pages)
