"""The pages people use (issue 7): the clinician app a SMART launch lands in, and the consultant's link.

``init_app`` registers both blueprints, CSRF protection for every form (the JSON APIs are exempt), the session
cookie policy and the headers every HTML page carries (Content-Security-Policy without inline scripts or styles).
"""

import functools

from flask import Flask, Response
from flask_wtf.csrf import CSRFError

from service.auth.isolation import patient_independent
from service.web import clinician, consultant
from service.consultants import configured_consultants
from service.web.pages import error_page
from service.web.security import init_security


def init_app(app: Flask) -> None:
    """Register the pages; call last in create_app (CSRF exemptions name the API blueprints)."""
    configured_consultants(app)  # a malformed CONSULTANTS fails at startup
    app.register_blueprint(clinician.bp)
    app.register_blueprint(consultant.bp)
    _patient_independent_static(app, "web.static")  # CSS for consultants (no launch) and launched sessions alike
    init_security(app)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError) -> Response:
        return error_page(400, "The form was sent without a valid security token (it may have expired). Go back, "
                               "reload the page and send it again.", issue_code="invalid")


def _patient_independent_static(app: Flask, endpoint: str) -> None:
    """Mark a blueprint's static-file view patient-independent (it serves our CSS, no patient data)."""
    view = app.view_functions[endpoint]

    @functools.wraps(view)
    def static_file(filename: str) -> Response:
        return view(filename=filename)

    app.view_functions[endpoint] = patient_independent(static_file)
