"""CDS Hooks 2.0 endpoints (https://cds-hooks.hl7.org/2.0/): discovery, the referral services, feedback.

- `GET  /cds-services`                 discovery (§Discovery); open: it names services, never patient data
- `POST /cds-services/<id>`            a hook call (§Calling a CDS Service); a client JWT is required
- `POST /cds-services/<id>/feedback`   what the user did with a card (§Feedback); a client JWT is required

Errors are FHIR OperationOutcomes (application/fhir+json, a JSON object with the message in
issue[0].diagnostics) like every other error of this service; CDS Hooks leaves error bodies open ("CDS
Services MAY return other HTTP statuses, specifically 4xx and 5xx"). 400: the call is malformed; 401: the
client JWT is missing or fails a check (with `WWW-Authenticate: Bearer`); 403: the client may not send us to
that fhirServer; 404: no such service; 412: no data could be obtained (§Prefetch Template).

CDS calls come from the EHR's servers, not from a clinician's browser: they never carry a SMART launch
session, so the session-bound patient isolation (service/auth/isolation.py) does not apply to them
(`patient_independent`); each call is bound instead by its client JWT, its context.patientId and the checks
that everything it sends (draft orders, prefetch) is about that patient.

Authentication (§Trusting CDS Clients), decided for this service: hook and feedback calls need a JWT signed by a
client listed in SECOND_OPINION_CDS_CLIENTS. With no clients configured every such call is refused (401, the
message says what to set), unless SECOND_OPINION_CDS_ALLOW_UNAUTHENTICATED=true (development only; logged as
a warning at startup). The expected `aud` is the URL of the endpoint called: PUBLIC_URL + path when PUBLIC_URL
is set (behind a proxy), else the URL the request arrived at; feedback also accepts the service's own URL.
"""

import logging
import time
import uuid
from datetime import UTC, datetime

from flask import Blueprint, Flask, Response, current_app, request

from service.api.responses import json_response
from service.auth.isolation import patient_independent
from service.cds.auth import ClientVerifier, JwksCache, VerifiedClient, check_algorithms, parse_clients
from service.cds.cards import CardContext
from service.cds.feedback import parse_feedback
from service.cds.hook_request import parse_hook_request
from service.cds.hooks import EXTENSION, CdsRuntime, HookSettings, ResultCache, answer_hook, build_ehr_session
from service.cds.services import SERVICES, CdsService, find_service
from service.cds.store import CdsStore
from service.errors import Forbidden, NotFound
from service.store.repository import get_repository

log = logging.getLogger(__name__)

bp = Blueprint("cds_hooks", __name__)


def init_app(app: Flask) -> None:
    """Read the CDS settings (a bad CDS_CLIENTS fails here, at startup) and register the blueprints."""
    from service.api import openapi

    clients = parse_clients(app.config.get("CDS_CLIENTS"))
    algorithms = check_algorithms(app.config.get("CDS_JWT_ALGORITHMS"))
    store = CdsStore(get_repository(app).engine)
    keys = JwksCache(build_ehr_session(), ttl_s=float(app.config["CDS_JWKS_CACHE_S"]))
    verifier = ClientVerifier(clients, algorithms=algorithms, leeway_s=float(app.config["CDS_JWT_LEEWAY_S"]),
                              keys=keys, remember_jti=store.remember_jti)
    allow_unauthenticated = app.config.get("CDS_ALLOW_UNAUTHENTICATED") is True
    if allow_unauthenticated:
        log.warning("CDS_ALLOW_UNAUTHENTICATED is on: CDS Hooks calls are accepted without a client JWT")
    elif not clients:
        log.info("no CDS clients configured (SECOND_OPINION_CDS_CLIENTS): hook calls will be refused")
    settings = HookSettings(budget_s=float(app.config["CDS_HOOK_BUDGET_S"]),
                            fhir_timeout_s=float(app.config["FHIR_TIMEOUT"]),
                            max_pages=int(app.config["FHIR_MAX_PAGES"]),
                            result_cache_s=float(app.config["CDS_RESULT_CACHE_S"]))
    app.extensions[EXTENSION] = CdsRuntime(store=store, verifier=verifier,
                                           allow_unauthenticated=allow_unauthenticated,
                                           session=build_ehr_session(), settings=settings,
                                           cache=ResultCache(settings.result_cache_s))
    app.register_blueprint(bp)
    app.register_blueprint(openapi.bp)


def get_runtime() -> CdsRuntime:
    return current_app.extensions[EXTENSION]


@bp.get("/cds-services")
@patient_independent
def discovery() -> Response:
    """CDS Hooks 2.0 §Discovery: the services, their hooks and prefetch templates."""
    return json_response({"services": [s.discovery() for s in SERVICES.values()]})


@bp.post("/cds-services/<service_id>")
@patient_independent
def call_service(service_id: str) -> Response:
    """A hook call: cards about the second-opinion packet for the referral being ordered."""
    started = time.monotonic()
    service = _service(service_id)
    caller = _authenticate([_endpoint_url()])
    hook_request = parse_hook_request(request.get_data(), service)
    if hook_request.fhir_server and caller.client and not caller.client.allows_fhir_server(hook_request.fhir_server):
        raise Forbidden("fhirServer is not one of the FHIR servers configured for this CDS client")
    ctx = CardContext(hook=hook_request.hook, patient_id=hook_request.patient_id, user_id=hook_request.user_id,
                      launch_url=_launch_url(), source_url=current_app.config.get("PUBLIC_URL") or None,
                      now=datetime.now(UTC).replace(microsecond=0), new_uuid=lambda: str(uuid.uuid4()))
    answer = answer_hook(get_runtime(), service, hook_request, ctx, started=started, client=caller.iss)
    return json_response(answer)


@bp.post("/cds-services/<service_id>/feedback")
@patient_independent
def feedback(service_id: str) -> Response:
    """CDS Hooks 2.0 §Feedback: accepted suggestions and overridden cards, recorded."""
    service = _service(service_id)
    endpoint = _endpoint_url()
    caller = _authenticate([endpoint, endpoint.removesuffix("/feedback")])
    entries = parse_feedback(request.get_data())
    count = get_runtime().store.record_feedback(service.id, entries, caller.iss)
    log.info("%s: %d feedback entr%s recorded", service.id, count, "y" if count == 1 else "ies")
    return json_response({"recorded": count})


@bp.after_request
def _challenge(response: Response) -> Response:
    """401 answers say how to authenticate (rfc6750 §3)."""
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cds-services", error="invalid_token"'
    return response


def _service(service_id: str) -> CdsService:
    service = find_service(service_id)
    if service is None:
        raise NotFound(f"no CDS service {service_id[:64]!r}; see GET /cds-services")
    return service


def _authenticate(audiences: list[str]) -> VerifiedClient:
    runtime = get_runtime()
    if runtime.allow_unauthenticated:
        return VerifiedClient(iss="unauthenticated", jti="", expires_at=0, tenant=None, client=None)
    return runtime.verifier.verify(request.headers.get("Authorization"), audiences)


def _endpoint_url() -> str:
    """The URL of the endpoint called, as the client addresses it (the JWT's expected aud)."""
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return public.rstrip("/") + request.path
    return request.base_url


def _launch_url() -> str:
    """Our SMART launch URL for card links."""
    configured = current_app.config.get("CDS_LAUNCH_URL")
    if configured:
        return configured
    base = current_app.config.get("PUBLIC_URL") or request.host_url
    return base.rstrip("/") + "/launch"
