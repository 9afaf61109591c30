"""The renditions' static files (the stylesheet), served by a tiny blueprint at /render/static/.

The pages link their stylesheet rather than inlining it, so a Content-Security-Policy without 'unsafe-inline'
(style-src 'self') allows them; the PDF renderer reads the same file from the package (service.render.pdf).
"""

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from service.auth.isolation import patient_independent

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL_PATH = "/render/static"
STYLESHEET_NAME = "render.css"
STYLESHEET_PATH = STATIC_DIR / STYLESHEET_NAME
STYLESHEET_URL = f"{STATIC_URL_PATH}/{STYLESHEET_NAME}"
STATIC_MAX_AGE_S = 3600

bp = Blueprint("render", __name__)


@bp.get(f"{STATIC_URL_PATH}/<path:filename>")
@patient_independent
def static(filename: str) -> Response:
    """A static file of the renditions (no patient data; 404 as an OperationOutcome for anything else)."""
    return send_from_directory(STATIC_DIR, filename, max_age=STATIC_MAX_AGE_S)
