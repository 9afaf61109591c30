"""PDF renditions with WeasyPrint, which may fetch nothing but the renditions' own stylesheet.

WeasyPrint resolves the page's <link rel="stylesheet"> against DOCUMENT_BASE_URL (an .invalid host, RFC 6761
§6.4, that never resolves); the URL fetcher answers that one URL with the stylesheet read from the package and
refuses every other URL, so no rendition can reach the network or the file system. The running header (patient,
referral id, date) and the "Page N of M" footer come from the stylesheet's @page margin boxes (CSS Paged Media
§5, CSS Generated Content for Paged Media §2 string-set, §4 counter(pages)).

WeasyPrint is imported on first use: it needs Debian's pango (libpango-1.0-0, libpangoft2-1.0-0) and a font,
and without them only the PDF rendition fails (501), not the service. Without HarfBuzz's subsetter
(libharfbuzz-subset0) it embeds whole fonts and warns, on import, that a later version will require it; that
warning is not an error here.
"""

import warnings
from urllib.parse import urljoin

from service.errors import ServiceError
from service.render.assets import STYLESHEET_PATH, STYLESHEET_URL

DOCUMENT_BASE_URL = "https://renditions.invalid/"
STYLESHEET_FETCH_URL = urljoin(DOCUMENT_BASE_URL, STYLESHEET_URL)
CSS_CONTENT_TYPE = "text/css; charset=utf-8"


class PdfUnavailable(ServiceError):
    """WeasyPrint or the system libraries it needs (pango) are not installed."""

    status = 501
    issue_code = "not-supported"


class FetchRefused(ValueError):
    """A rendition tried to load something other than its stylesheet."""


def render_pdf(html: str) -> bytes:
    """A PDF of a rendition page (render_packet_html / render_consult_html with fragment=False)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "HarfBuzz-Subset", DeprecationWarning)
            from weasyprint import HTML
    except OSError as exc:  # pango or its fonts missing: cffi cannot load the library
        raise PdfUnavailable("PDF renditions need pango (Debian: libpango-1.0-0 libpangoft2-1.0-0) and a "
                             "font package") from exc
    return HTML(string=html, base_url=DOCUMENT_BASE_URL, url_fetcher=_stylesheet_only_fetcher()).write_pdf()


def _stylesheet_only_fetcher():  # noqa: ANN202 - a weasyprint.URLFetcher, imported lazily like weasyprint
    """A WeasyPrint URL fetcher that serves the renditions' stylesheet from the package and refuses the rest."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class StylesheetOnlyFetcher(URLFetcher):
        """Answers STYLESHEET_FETCH_URL from the package file; every other URL is refused."""

        def fetch(self, url: str, headers: dict | None = None) -> URLFetcherResponse:
            if url != STYLESHEET_FETCH_URL:
                raise FetchRefused(f"renditions load nothing but their stylesheet (refused {url[:80]})")
            return URLFetcherResponse(url, STYLESHEET_PATH.read_bytes(), {"Content-Type": CSS_CONTENT_TYPE})

    return StylesheetOnlyFetcher()
