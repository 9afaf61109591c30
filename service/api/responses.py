"""Building API responses: FHIR resources as FHIR JSON or FHIR XML (content negotiation), plain JSON otherwise.

Negotiation follows FHIR R4 http.html#mime-type: `_format` (json, xml, or a FHIR/JSON/XML media type) overrides
the Accept header; Accept is matched against application/fhir+json, application/json, application/fhir+xml,
application/xml and text/xml (a missing Accept, or */*, means JSON). A format we do not serve is 406 Not
Acceptable, as an OperationOutcome (errors stay FHIR JSON, as every error does).

Documents people read (the referral packet, the consult) are also served as renditions: text/html and
application/pdf (`_format=html` / `_format=pdf`), on the routes that ask for them (`fhir_format(renditions=True)`);
every other route still answers those media types with 406.
"""

import json

from flask import Response, request
from fhir.resources.R4B import get_fhir_model_class

from mappers.fhirxml import dump_fhir_xml
from service.errors import ServiceError

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
_FORMAT_PARAMETER = {"json": "json", "application/json": "json", FHIR_JSON: "json",
                     "xml": "xml", "text/xml": "xml", "application/xml": "xml", FHIR_XML: "xml"}
_ACCEPTED = {FHIR_JSON: "json", "application/json": "json", FHIR_XML: "xml", "application/xml": "xml",
             "text/xml": "xml"}
HTML = "text/html"
PDF = "application/pdf"
RENDITION_FORMATS = frozenset({"html", "pdf"})
_RENDITION_PARAMETER = {"html": "html", HTML: "html", "pdf": "pdf", PDF: "pdf"}
_RENDITION_ACCEPTED = {HTML: "html", PDF: "pdf"}  # after the FHIR types: */* still means FHIR JSON


class NotAcceptable(ServiceError):
    """The caller asked for a representation we do not produce."""

    status = 406
    issue_code = "not-supported"


def fhir_format(*, renditions: bool = False) -> str:
    """The representation the current request asks for: "json" or "xml", and with renditions also "html" or
    "pdf" (NotAcceptable otherwise)."""
    by_parameter = {**_FORMAT_PARAMETER, **(_RENDITION_PARAMETER if renditions else {})}
    by_accept = {**_ACCEPTED, **(_RENDITION_ACCEPTED if renditions else {})}
    served = f"{FHIR_JSON} or {FHIR_XML}" + (f", {HTML} or {PDF}" if renditions else "")
    if "_format" in request.args:
        asked = request.args.get("_format", "").strip().lower().replace(" ", "+")  # '+' arrives as a space
        asked = asked.split(";")[0].strip()
        if asked not in by_parameter:
            names = "json, xml, html or pdf" if renditions else "json or xml"
            raise NotAcceptable(f"_format={asked[:60]} is not served; use {names} (or {served})")
        return by_parameter[asked]
    accept = request.accept_mimetypes
    if not accept:
        return "json"
    best = accept.best_match(list(by_accept))
    if best is None:
        raise NotAcceptable(f"none of the accepted media types is served; this resource is available as {served}")
    return by_accept[best]


def fhir_response(resource_json: str | dict, status: int = 200, headers: dict | None = None, *,
                  fmt: str | None = None) -> Response:
    """A FHIR resource response, as FHIR JSON or FHIR XML (fmt, else negotiated from the request)."""
    fmt = fmt or fhir_format()
    if fmt == "xml":
        data = json.loads(resource_json) if isinstance(resource_json, str) else resource_json
        model = get_fhir_model_class(data["resourceType"]).model_validate(data)
        resp = Response(dump_fhir_xml(model), status=status, content_type=f"{FHIR_XML}; charset=utf-8",
                        headers=headers)
    else:
        body = resource_json if isinstance(resource_json, str) else json.dumps(resource_json)
        resp = Response(body, status=status, content_type=f"{FHIR_JSON}; charset=utf-8", headers=headers)
    resp.vary.add("Accept")
    return resp


def html_response(html: str) -> Response:
    """An HTML rendition (UTF-8); its Content-Security-Policy is every HTML page's (service/web/security.py)."""
    resp = Response(html, content_type=f"{HTML}; charset=utf-8")
    resp.vary.add("Accept")
    return resp


def pdf_response(pdf: bytes, filename: str) -> Response:
    """A PDF rendition, shown in the browser (inline) and saved under filename."""
    resp = Response(pdf, content_type=PDF, headers={"Content-Disposition": f'inline; filename="{filename}"',
                                                    "X-Content-Type-Options": "nosniff"})
    resp.vary.add("Accept")
    return resp


def json_response(data: object, status: int = 200, headers: dict | None = None) -> Response:
    """A plain JSON response."""
    return Response(json.dumps(data), status=status, content_type="application/json", headers=headers)
