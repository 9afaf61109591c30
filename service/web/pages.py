"""Rendering pages and error pages (HTML for browsers; an OperationOutcome for programs that do not ask for HTML)."""

import logging

from flask import Response, render_template, request

from service.errors import outcome_response

log = logging.getLogger(__name__)

PATIENT_QUESTION_SUGGESTIONS = (
    "How accurate is the diagnosis?",
    "What can be done other than surgery?",
    "What are the pros and cons of each option?",
    "What are the success rates of each option?",
    "What is recovery like after each option?",
    "What does each option cost?",
)


def page(template: str, status: int = 200, **context: object) -> Response:
    """An HTML page; never cached (it shows patient data)."""
    body = render_template(template, **context)
    return Response(body, status=status, content_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def wants_html() -> bool:
    """A browser asks for text/html by name; API clients send */* or a JSON type."""
    return "text/html" in request.headers.get("Accept", "")


def error_page(status: int, message: str, *, title: str | None = None, issue_code: str = "exception",
               force_html: bool = False) -> Response:
    """A readable error page (or an OperationOutcome for a client that does not ask for HTML)."""
    log.warning("page %s: %s", status, message)
    if not (force_html or wants_html()):
        return outcome_response(status, issue_code, message)
    titles = {400: "The form could not be accepted", 401: "Please open the app from the EHR",
              403: "Not allowed", 404: "Not found", 409: "Not possible now"}
    return page("error.html", status, title=title or titles.get(status, "Something went wrong"), message=message)
