"""Browser-facing security: CSRF on every form, session cookies, and the headers every HTML page carries."""

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

# JSON APIs called by programs (their callers authenticate otherwise) and the OAuth redirect: no CSRF token.
CSRF_EXEMPT_BLUEPRINTS = ("referrals", "cds_hooks", "token")
CSRF_EXEMPT_VIEWS = ("launch.callback",)
EXTENSION = "second_opinion.csrf"


class HttpsAwareSessionInterface(SecureCookieSessionInterface):
    """The session cookie is Secure when configured, when the request came over https, or when SameSite=None."""

    def get_cookie_secure(self, app: Flask) -> bool:
        secure = bool(app.config.get("SESSION_COOKIE_SECURE"))
        same_site = str(app.config.get("SESSION_COOKIE_SAMESITE") or "")
        current: Request | None = request if request else None
        return secure or same_site.lower() == "none" or bool(current is not None and current.is_secure)


def content_security_policy(frame_ancestors: str) -> str:
    """The CSP of every HTML page: our own files only, no inline scripts or styles, no plugins."""
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
            f"base-uri 'none'; form-action 'self'; frame-ancestors {frame_ancestors}")


def init_security(app: Flask) -> CSRFProtect:
    """CSRF protection (exempting the JSON APIs), the cookie policy and the page headers."""
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.session_interface = HttpsAwareSessionInterface()
    csrf = CSRFProtect(app)
    for name in CSRF_EXEMPT_BLUEPRINTS:
        blueprint = app.blueprints.get(name)
        if blueprint is not None:
            csrf.exempt(blueprint)
    for endpoint in CSRF_EXEMPT_VIEWS:
        view = app.view_functions.get(endpoint)
        if view is not None:
            csrf.exempt(view)
    app.extensions[EXTENSION] = csrf
    policy = content_security_policy(str(app.config.get("FRAME_ANCESTORS") or "'self'"))

    @app.after_request
    def _page_headers(response: Response) -> Response:
        if response.mimetype == "text/html":
            response.headers["Content-Security-Policy"] = policy
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "same-origin"  # consultant links never leave in a Referer
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return csrf
