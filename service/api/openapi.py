"""The OpenAPI 3 description of the REST API, served at `GET /openapi.json`.

OPERATIONS is keyed by (method, Flask rule) as the route is declared, e.g. ("POST",
"/api/referrals/<referral_id>/send"); a rule with an `any(...)` converter is listed once per value, e.g.
("POST", "/api/referrals/<referral_id>/accept"), so each action has its own path and summary. Adding a route
means adding one entry here: tests/test_openapi.py compares OPERATIONS with the app's URL map (both ways) and
names any route that is missing or stale, and checks README.md's "## REST API" table against it. Path
parameters come from the rule itself; error responses are OperationOutcomes (HTML pages on browser routes).
`python -m service.api.openapi --readme` prints the README table for the spec.
"""

import re
import sys
from typing import Any

from flask import Blueprint, Response, current_app, request

from service.api.responses import json_response
from service.auth.isolation import patient_independent

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"
RULE_PARAMETER = re.compile(r"<(?:(?P<converter>[a-z]+)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")
JSON = "application/json"
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
HTML = "text/html"
PDF = "application/pdf"
HTML_PAGE = {HTML: {"schema": {"type": "string"}}}


def _json(schema: str | dict) -> dict:
    return {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema}}


def _fhir(resource: str) -> dict:
    return {FHIR_JSON: {"schema": {"$ref": f"#/components/schemas/{resource}"}}}


def _document_renditions(resource: str) -> dict:
    """A FHIR document as FHIR JSON or XML, or rendered for people as HTML or PDF (service/render)."""
    return {**_fhir(resource), FHIR_XML: {"schema": {"type": "string"}}, HTML: {"schema": {"type": "string"}},
            PDF: {"schema": {"type": "string", "format": "binary"}}}


RENDITIONS_DESCRIPTION = (
    "Content negotiation (FHIR R4 http.html#mime-type): `Accept` or `_format` chooses FHIR JSON (default; "
    "`_format=json`), FHIR XML (`application/fhir+xml`, `_format=xml`), an HTML page (`text/html`, `_format=html`; "
    "UTF-8, no scripts, its stylesheet at /render/static/render.css) or a PDF (`application/pdf`, `_format=pdf`; "
    "`Content-Disposition: inline`, a running header with patient, referral id and date, \"Page N of M\"). "
    "Anything else is 406; errors are FHIR JSON OperationOutcomes whatever was asked for.")


def op(summary: str, tag: str, *, ok: str = "200", ok_description: str = "OK", content: dict | None = None,
       body: dict | None = None, errors: tuple[int, ...] = (), description: str | None = None,
       security: list | None = None, html_errors: bool = False) -> dict[str, Any]:
    """One operation: its summary, tag, success response, request body and the errors it documents."""
    operation: dict[str, Any] = {"summary": summary, "tags": [tag],
                                 "responses": {ok: {"description": ok_description, **({"content": content}
                                                                                       if content else {})}}}
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    for status in errors:
        operation["responses"][str(status)] = {"$ref": f"#/components/responses/E{status}"}
    if html_errors:  # browser routes answer errors with a readable page
        operation["responses"]["4XX"] = {"$ref": "#/components/responses/HtmlError"}
    if security is not None:
        operation["security"] = security
    return operation


CDS_JWT = [{"cdsClientJwt": []}]
OBJECT: dict[str, Any] = {"type": "object"}

# (method, Flask rule) → operation. Keep in step with the routes (tests/test_openapi.py checks both ways).
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): op("Liveness: the service is up and which EHR it uses", "service",
                           content=_json({"type": "object", "properties": {"status": {"type": "string"},
                                                                           "ehr": {"type": "string",
                                                                                   "nullable": True}}})),
    ("GET", "/openapi.json"): op("This OpenAPI description", "service", content=_json({"type": "object"})),
    ("POST", "/api/referrals"): op(
        "Draft a referral: fetch the record and build the packet", "referrals", ok="201",
        ok_description="Created (Location: the referral)", content=_json("Referral"),
        body=_json("ReferralInput"), errors=(400, 404, 415, 502, 504)),
    ("GET", "/api/referrals/<referral_id>"): op(
        "The referral: status, packet summary, write-back steps", "referrals", content=_json("Referral"),
        errors=(404,)),
    ("GET", "/api/referrals/<referral_id>/packet"): op(
        "The packet: a FHIR document Bundle (or its HTML or PDF rendition)", "referrals",
        content=_document_renditions("Bundle"), errors=(404, 406), description=RENDITIONS_DESCRIPTION),
    ("POST", "/api/referrals/<referral_id>/send"): op(
        "Freeze the packet; create the ServiceRequest and Task in the EHR (status requested)", "referrals",
        content=_json("Referral"), errors=(404, 409, 502, 504)),
    ("POST", "/api/referrals/<referral_id>/consult"): op(
        "The consultant's answer (FHIR document Bundle or Composition); written back to the EHR", "referrals",
        ok="202", ok_description="Accepted; the write-back runs in the background", content=_json("Referral"),
        body=_fhir("Bundle"), errors=(400, 404, 409, 415, 422)),
    ("GET", "/api/referrals/<referral_id>/consult"): op(
        "Our consult document (FHIR document Bundle, or its HTML or PDF rendition)", "referrals",
        content=_document_renditions("Bundle"), errors=(404, 406), description=RENDITIONS_DESCRIPTION),
    ("GET", "/api/referrals/<referral_id>/history"): op(
        "Every status change: from, to, who, when, why", "referrals",
        content=_json({"type": "array", "items": {"$ref": "#/components/schemas/Transition"}}), errors=(404,)),
    ("POST", "/api/referrals/<referral_id>/accept"): op(
        "The consultant accepts the referral", "referrals", content=_json("Referral"), errors=(400, 404, 409)),
    ("POST", "/api/referrals/<referral_id>/reject"): op(
        "The consultant declines the referral (body {\"reason\": text} required)", "referrals",
        content=_json("Referral"), body=_json("ActionReason"), errors=(400, 404, 409)),
    ("POST", "/api/referrals/<referral_id>/start"): op(
        "The consultant starts working on the referral (status in-progress)", "referrals",
        content=_json("Referral"), errors=(400, 404, 409)),
    ("POST", "/api/referrals/<referral_id>/cancel"): op(
        "The clinician withdraws the referral (body {\"reason\": text} required)", "referrals",
        content=_json("Referral"), body=_json("ActionReason"), errors=(400, 404, 409)),
    ("POST", "/api/referrals/<referral_id>/retry"): op(
        "Resume a failed write-back with a fresh retry budget", "referrals", ok="202",
        ok_description="Accepted; the write-back resumes", content=_json("Referral"), errors=(404, 409)),
    ("GET", "/api/referrals/<referral_id>/audit"): op(
        "Who read the packet or consult, and every write to the EHR (ids and statuses only)", "referrals",
        content=_json({"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}}), errors=(404,)),
    ("GET", "/launch"): op(
        "SMART EHR launch (?iss=&launch=): redirects to the EHR's authorization endpoint", "smart", ok="302",
        ok_description="Redirect to the authorization server", html_errors=True),
    ("GET", "/launch/standalone"): op(
        "SMART standalone launch (?iss=): redirects to the EHR's authorization endpoint", "smart", ok="302",
        ok_description="Redirect to the authorization server", html_errors=True),
    ("GET", "/callback"): op(
        "SMART redirect URI: checks state, exchanges the code, then redirects to the patient page", "smart",
        ok="303", ok_description="Redirect to /patient", html_errors=True),
    ("GET", "/patient"): op(
        "The launched patient's page (HTML; needs a launched session)", "smart",
        content={"text/html": {"schema": {"type": "string"}}}, html_errors=True),
    ("GET", "/.well-known/jwks.json"): op(
        "Our public keys (JWK Set) for backend-services client assertions", "smart",
        content=_json({"type": "object", "properties": {"keys": {"type": "array", "items": OBJECT}}})),
    ("POST", "/auth/token"): op(
        "Access token for a server-to-server API caller (SMART Backend Services: client_credentials with a "
        "signed client assertion)", "smart",
        content=_json({"type": "object", "properties": {"access_token": {"type": "string"},
                                                        "token_type": {"type": "string"},
                                                        "expires_in": {"type": "integer"},
                                                        "scope": {"type": "string"}}}),
        body={"application/x-www-form-urlencoded": {"schema": OBJECT}},
        description="Used with SECOND_OPINION_API_AUTH=token. Errors are RFC 6749 §5.2 JSON "
                    "({error, error_description}): 400, or 401 for invalid_client."),
    ("GET", "/patient/<patient_id>/referrals/new"): op(
        "Clinician app: the form that starts a referral", "pages", content=HTML_PAGE, html_errors=True),
    ("POST", "/patient/<patient_id>/referrals"): op(
        "Clinician app: build the draft packet (form post, CSRF token)", "pages",
        ok="303", ok_description="Redirect to the draft", html_errors=True),
    ("GET", "/referrals/<referral_id>"): op(
        "Clinician app: the draft to review, or the referral's status, timeline and concordance", "pages",
        content=HTML_PAGE, html_errors=True),
    ("POST", "/referrals/<referral_id>"): op(
        "Clinician app: re-check the record or send the draft (form post, CSRF token)", "pages",
        ok="303", ok_description="Redirect to the referral", html_errors=True),
    ("GET", "/consult/<token>"): op(
        "Consultant link: the packet, accept/decline and the consult form", "pages",
        content=HTML_PAGE, html_errors=True),
    ("GET", "/consult/<token>/packet.pdf"): op(
        "Consultant link: the packet as PDF", "pages",
        content={PDF: {"schema": {"type": "string", "format": "binary"}}}, html_errors=True),
    ("GET", "/consult/<token>/packet.json"): op(
        "Consultant link: the packet as FHIR JSON", "pages", content=_fhir("Bundle"), html_errors=True),
    ("GET", "/consult/<token>/packet.xml"): op(
        "Consultant link: the packet as FHIR XML", "pages",
        content={FHIR_XML: {"schema": {"type": "string"}}}, html_errors=True),
    ("POST", "/consult/<token>/accept"): op(
        "Consultant link: accept the referral (form post)", "pages",
        ok="303", ok_description="Redirect to the link's page", html_errors=True),
    ("POST", "/consult/<token>/decline"): op(
        "Consultant link: decline, with a reason (form post)", "pages",
        ok="303", ok_description="Redirect to the link's page", html_errors=True),
    ("POST", "/consult/<token>/consult"): op(
        "Consultant link: submit the consult form", "pages",
        ok="303", ok_description="Redirect to the link's page", html_errors=True),
    ("POST", "/consult/<token>/upload"): op(
        "Consultant link: upload a C-CDA or FHIR consult (multipart)", "pages",
        ok="303", ok_description="Redirect to the link's page", html_errors=True),
    ("GET", "/cds-services"): op(
        "CDS Hooks discovery: the second-opinion referral services", "cds-hooks", content=_json("CdsDiscovery"),
        description="CDS Hooks 2.0 §Discovery. One service per hook: second-opinion-referral (order-sign) and "
                    "second-opinion-referral-select (order-select)."),
    ("POST", "/cds-services/<service_id>"): op(
        "CDS Hooks call (order-select or order-sign): cards about the second-opinion packet", "cds-hooks",
        content=_json("CdsResponse"), body=_json("CdsRequest"), errors=(400, 401, 403, 404, 412),
        security=CDS_JWT, description="CDS Hooks 2.0 §Calling a CDS Service. `{\"cards\": []}` when the draft "
                                      "orders hold no second-opinion referral."),
    ("POST", "/cds-services/<service_id>/feedback"): op(
        "CDS Hooks feedback: what the user did with a card", "cds-hooks",
        content=_json({"type": "object", "properties": {"recorded": {"type": "integer"}}}),
        body=_json("CdsFeedback"), errors=(400, 401, 404), security=CDS_JWT,
        description="CDS Hooks 2.0 §Feedback."),
}

ERROR_DESCRIPTIONS = {
    400: "Bad request (OperationOutcome)", 401: "No or invalid CDS client JWT (OperationOutcome)",
    403: "Forbidden (OperationOutcome)", 404: "Not found (OperationOutcome)",
    406: "None of the accepted media types is served here (OperationOutcome)",
    409: "Wrong state for this action (OperationOutcome)", 412: "The record could not be obtained (OperationOutcome)",
    415: "Unsupported media type (OperationOutcome)", 422: "Not a valid FHIR document (OperationOutcome)",
    502: "The EHR failed or could not be reached (OperationOutcome)", 504: "The EHR timed out (OperationOutcome)",
}

SCHEMAS: dict[str, Any] = {
    "OperationOutcome": {"type": "object", "required": ["resourceType", "issue"],
                         "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                                        "issue": {"type": "array", "items": OBJECT}}},
    "Bundle": {"type": "object", "required": ["resourceType"], "description": "A FHIR R4 Bundle",
               "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]}}},
    "ReferralInput": {"type": "object", "required": ["patient", "question"],
                      "properties": {"patient": {"type": "string"}, "question": {"type": "string"},
                                     "patient_questions": {"type": "array", "items": {"type": "string"}},
                                     "exclude": {"type": "array", "items": {"type": "string"}},
                                     "since": {"type": "string", "format": "date"},
                                     "consultant": {"type": "string",
                                                    "description": "id of a configured consultant (CONSULTANTS)"}}},
    "Referral": {"type": "object", "required": ["id", "status"],
                 "properties": {"id": {"type": "string"}, "status": {"type": "string"},
                                "patient": {"type": "string"}, "packet": OBJECT}},
    "ActionReason": {"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}},
    "AuditEvent": {"type": "object", "properties": {k: {"nullable": True} for k in (
        "at", "actor", "action", "resource", "method", "status", "detail")}},
    "Transition": {"type": "object", "properties": {k: {"type": "string", "nullable": True}
                                                    for k in ("from", "to", "actor", "reason", "at")}},
    "CdsDiscovery": {"type": "object", "required": ["services"], "properties": {"services": {
        "type": "array", "items": {"type": "object", "required": ["hook", "description", "id"], "properties": {
            "hook": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"},
            "id": {"type": "string"}, "prefetch": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
    "CdsRequest": {"type": "object", "required": ["hook", "hookInstance", "context"], "properties": {
        "hook": {"type": "string", "enum": ["order-select", "order-sign"]}, "hookInstance": {"type": "string"},
        "fhirServer": {"type": "string", "format": "uri"},
        "fhirAuthorization": {"type": "object", "required": ["access_token", "token_type"], "properties": {
            "access_token": {"type": "string"}, "token_type": {"type": "string"},
            "expires_in": {"type": "integer"}, "scope": {"type": "string"}, "subject": {"type": "string"}}},
        "context": {"type": "object", "required": ["userId", "patientId", "draftOrders"], "properties": {
            "userId": {"type": "string"}, "patientId": {"type": "string"}, "encounterId": {"type": "string"},
            "selections": {"type": "array", "items": {"type": "string"}},
            "draftOrders": {"$ref": "#/components/schemas/Bundle"}}},
        "prefetch": {"type": "object"}}},
    "CdsResponse": {"type": "object", "required": ["cards"], "properties": {"cards": {
        "type": "array", "items": {"type": "object", "required": ["summary", "indicator", "source"], "properties": {
            "uuid": {"type": "string"}, "summary": {"type": "string", "maxLength": 139},
            "detail": {"type": "string"}, "indicator": {"type": "string", "enum": ["info", "warning", "critical"]},
            "source": {"type": "object", "required": ["label"]}, "suggestions": {"type": "array", "items": OBJECT},
            "selectionBehavior": {"type": "string"}, "links": {"type": "array", "items": {
                "type": "object", "required": ["label", "url", "type"], "properties": {
                    "label": {"type": "string"}, "url": {"type": "string"},
                    "type": {"type": "string", "enum": ["absolute", "smart"]},
                    "appContext": {"type": "string"}}}}}}}}},
    "CdsFeedback": {"type": "object", "required": ["feedback"], "properties": {"feedback": {
        "type": "array", "items": {"type": "object", "required": ["card", "outcome", "outcomeTimestamp"],
                                   "properties": {
            "card": {"type": "string"}, "outcome": {"type": "string", "enum": ["accepted", "overridden"]},
            "acceptedSuggestions": {"type": "array", "items": {"type": "object",
                                                               "properties": {"id": {"type": "string"}}}},
            "overrideReason": OBJECT, "outcomeTimestamp": {"type": "string", "format": "date-time"}}}}}},
}


def openapi_path(rule: str) -> str:
    """'/api/referrals/<referral_id>/send' → '/api/referrals/{referral_id}/send'."""
    return RULE_PARAMETER.sub(lambda m: "{" + m.group("name") + "}", rule)


def expand_rule(rule: str) -> list[str]:
    """A Flask rule with its `any(a, b)` converters written out: one rule per value (others are kept)."""
    match = next((m for m in RULE_PARAMETER.finditer(rule) if m.group("converter") == "any"), None)
    if match is None:
        return [rule]
    values = [v.strip().strip("'\"") for v in (match.group("args") or "").split(",") if v.strip()]
    return [r for value in values for r in expand_rule(rule[:match.start()] + value + rule[match.end():])]


def build_spec(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3 document for OPERATIONS."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, rule), operation in OPERATIONS.items():
        parameters = [{"name": m.group("name"), "in": "path", "required": True,
                       "schema": {"type": "integer" if m.group("converter") == "int" else "string"}}
                      for m in RULE_PARAMETER.finditer(rule)]
        entry = dict(operation, operationId=_operation_id(method, rule))
        if parameters:
            entry["parameters"] = parameters
        paths.setdefault(openapi_path(rule), {})[method.lower()] = entry
    spec: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Second-opinion referral service", "version": "0.1.0",
                 "description": "Second-opinion referrals over HL7 FHIR R4: referral packets, consults and "
                                "write-back, and CDS Hooks 2.0 services. Every error is a FHIR OperationOutcome."},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": SCHEMAS,
            "responses": {**{f"E{status}": {"description": text, "content": _fhir("OperationOutcome")}
                             for status, text in ERROR_DESCRIPTIONS.items()},
                          "HtmlError": {"description": "A page saying what went wrong (never a token or code)",
                                        "content": {"text/html": {"schema": {"type": "string"}}}}},
            "securitySchemes": {"cdsClientJwt": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "CDS Hooks 2.0 §Trusting CDS Clients: a JWT signed (ES384/RS384) by a client "
                               "listed in SECOND_OPINION_CDS_CLIENTS; aud = the endpoint's URL."}},
        },
    }
    if server_url:
        spec["servers"] = [{"url": server_url}]
    return spec


@bp.get("/openapi.json")
@patient_independent
def openapi_json() -> Response:
    """The OpenAPI 3 description of this API."""
    server = (current_app.config.get("PUBLIC_URL") or request.host_url).rstrip("/")
    return json_response(build_spec(server))


def readme_rows() -> list[str]:
    """The README "## REST API" table rows for the spec ("| `METHOD /path` | summary |")."""
    rows = []
    for (method, rule), operation in OPERATIONS.items():
        path = RULE_PARAMETER.sub(lambda m: "<" + ("id" if m.group("name").endswith("_id") else m.group("name")) + ">",
                                  rule)
        rows.append(f"| `{method} {path}` | {operation['summary']} |")
    return rows


def _operation_id(method: str, rule: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", " ", RULE_PARAMETER.sub(lambda m: "by " + m.group("name"), rule)).split()
    return method.lower() + "".join(w[:1].upper() + w[1:] for w in words)


if __name__ == "__main__" and "--readme" in sys.argv:
    print("| method and path | what it does |\n|---|---|")
    print("\n".join(readme_rows()))
