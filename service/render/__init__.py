"""Renditions of FHIR documents for people: the referral packet and the consult as HTML and PDF.

document.py reads a document Bundle into plain data, html.py fills the Jinja2 templates (templates/), pdf.py
prints a page with WeasyPrint, assets.py serves the stylesheet (static/). `init_app` registers that blueprint.
"""

from flask import Flask

from service.render.assets import bp
from service.render.html import render_consult_html, render_packet_html
from service.render.pdf import render_pdf

__all__ = ["init_app", "render_consult_html", "render_packet_html", "render_pdf"]


def init_app(app: Flask) -> None:
    """Serve the renditions' stylesheet at /render/static/."""
    app.register_blueprint(bp)
