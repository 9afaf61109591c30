"""HTML renditions of the referral packet and the consult document (Jinja2 templates, autoescaped).

Every value reaches the page as escaped text: the templates never mark anything safe and the EHR's narrative
XHTML is never inserted (service.render.document). The page links its stylesheet and carries no script, no
<style> element and no style attribute, so it works under a Content-Security-Policy without 'unsafe-inline',
and it loads nothing from outside the service (no CDN, no web fonts).
"""

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from service.render.assets import STYLESHEET_URL
from service.render.document import RenderedDocument, build_document_view

PAGE_TEMPLATE = "page.html"
FRAGMENT_TEMPLATE = "article.html"


def render_packet_html(bundle: dict, *, referral_id: str, fragment: bool = False) -> str:
    """The referral packet (a FHIR document Bundle as JSON) as an HTML page, or only its <article>."""
    return _render(build_document_view(bundle, kind="packet", referral_id=referral_id), fragment)


def render_consult_html(bundle: dict, *, referral_id: str, fragment: bool = False,
                        concordance: dict | None = None) -> str:
    """The consult document (a FHIR document Bundle as JSON) as an HTML page, or only its <article>.

    concordance (service.consults.concordance_of: what the second opinion confirmed, revised, refuted, added)
    fills the summary section; without it that section shows its narrative as plain text.
    """
    view = build_document_view(bundle, kind="consult", referral_id=referral_id, concordance=concordance, prose=True)
    return _render(view, fragment)


def _render(view: RenderedDocument, fragment: bool) -> str:
    """Fill the page (or fragment) template with a document view."""
    template = _environment().get_template(FRAGMENT_TEMPLATE if fragment else PAGE_TEMPLATE)
    return template.render(doc=view, stylesheet_url=STYLESHEET_URL)


@cache
def _environment() -> Environment:
    """The templates' environment: autoescaping always on, undefined names are errors."""
    return Environment(loader=PackageLoader("service.render", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
