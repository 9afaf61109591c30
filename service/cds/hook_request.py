"""Reading and checking a CDS Hooks call (CDS Hooks 2.0 §Calling a CDS Service / HTTP Request).

Every problem is an InvalidRequest (400) whose message names the field. Messages never quote values: a
request carries patient data and an access token.

Tolerance, decided on the specification's own examples (hooks order-select and order-sign, "Example (R4)"):
their `draftOrders` Bundle has no `type` (1..1 in R4) and their MedicationRequest carries an STU3-shaped
dosage. So the Bundle's `type` defaults to `collection`, and only the ServiceRequests (the only orders this
service reads) are validated with their R4B model; other orders are listed by type and id and not read.
"""

import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from service.cds.services import HOOK_ORDER_SELECT, CdsService, service_for_hook
from service.errors import InvalidRequest

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
REFERENCE_KEY = re.compile(r"^[A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
MAX_STRING = 1024


@dataclass(frozen=True)
class FhirAuthorization:
    """The bearer token the CDS client lent us for this call (CDS Hooks 2.0 §Passing the Access Token).

    It lives only in this object for the duration of the call: never logged, stored or shown (repr hides it).
    """

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    scope: str | None = None
    subject: str | None = None
    expires_in: int | None = None

    def header(self) -> str:
        """The Authorization header value for the EHR's FHIR server."""
        return f"Bearer {self.access_token}"


@dataclass(frozen=True)
class DraftOrders:
    """`context.draftOrders`: the Bundle (R4B, ServiceRequests only) and the other orders by key."""

    bundle: Bundle
    service_requests: list[ServiceRequest]
    other_orders: list[str]  # "Type/id" (or "Type") of orders that are not ServiceRequests


@dataclass(frozen=True)
class HookRequest:
    """A checked hook call for order-select or order-sign."""

    hook: str
    hook_instance: str
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None = field(repr=False)
    user_id: str
    patient_id: str
    encounter_id: str | None
    selections: list[str] | None  # order-select only
    draft_orders: DraftOrders
    prefetch: dict[str, object]  # as sent; checked by gather.read_prefetch

    @property
    def token_context(self) -> dict[str, str]:
        """The context fields usable as prefetch tokens (CDS Hooks 2.0 §Prefetch tokens)."""
        values = {"userId": self.user_id, "patientId": self.patient_id, "encounterId": self.encounter_id}
        return {k: v for k, v in values.items() if v is not None}


def parse_hook_request(data: bytes, service: CdsService) -> HookRequest:
    """Check a hook call addressed to `service`; InvalidRequest names the first problem."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("the body must be a JSON object (CDS Hooks 2.0 §Calling a CDS Service)") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object (CDS Hooks 2.0 §Calling a CDS Service)")
    hook = _required_string(body, "hook")
    if hook != service.hook:
        other = service_for_hook(hook)
        where = f"; {hook} is answered by /cds-services/{other.id}" if other else ""
        raise InvalidRequest(f"service {service.id} answers the {service.hook} hook, not {_quote(hook)}{where}")
    hook_instance = _required_string(body, "hookInstance")
    fhir_server = _fhir_server(body.get("fhirServer"))
    authorization = _fhir_authorization(body.get("fhirAuthorization"))
    if authorization is not None and fhir_server is None:
        raise InvalidRequest("fhirServer is required when fhirAuthorization is given (CDS Hooks 2.0 §HTTP Request)")
    context = body.get("context")
    if not isinstance(context, dict):
        raise InvalidRequest("context is required and must be a JSON object")
    prefetch = body.get("prefetch", {})
    if not isinstance(prefetch, dict):
        raise InvalidRequest("prefetch must be a JSON object of prefetch keys")
    return HookRequest(
        hook=hook, hook_instance=hook_instance, fhir_server=fhir_server, fhir_authorization=authorization,
        user_id=_context_reference(context, "userId"), patient_id=_context_id(context, "patientId", required=True),
        encounter_id=_context_id(context, "encounterId", required=False),
        selections=_selections(context) if hook == HOOK_ORDER_SELECT else None,
        draft_orders=parse_draft_orders(context.get("draftOrders")), prefetch=prefetch)


def parse_draft_orders(value: object) -> DraftOrders:
    """Check `context.draftOrders` (an R4 Bundle) and read its ServiceRequests with the R4B model."""
    if value is None:
        raise InvalidRequest("context.draftOrders is required (a FHIR Bundle of the draft orders)")
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise InvalidRequest("context.draftOrders must be a FHIR Bundle")
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidRequest("context.draftOrders.entry must be an array")
    service_requests: list[ServiceRequest] = []
    kept_entries: list[dict] = []
    other: list[str] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise InvalidRequest(f"context.draftOrders.entry[{index}] must hold a FHIR resource")
        if resource["resourceType"] != "ServiceRequest":
            other.append("/".join(str(p) for p in (resource["resourceType"], resource.get("id")) if p))
            continue
        try:
            service_request = ServiceRequest.model_validate(resource)
        except ValidationError as exc:
            raise InvalidRequest(f"context.draftOrders.entry[{index}] is not a valid R4 ServiceRequest: "
                                 f"{first_error(exc)}") from exc
        service_requests.append(service_request)
        kept_entries.append(entry)
    envelope = {k: v for k, v in value.items() if k != "entry"}
    envelope.setdefault("type", "collection")
    try:
        bundle = Bundle.model_validate({**envelope, "entry": kept_entries or None})
    except ValidationError as exc:
        raise InvalidRequest(f"context.draftOrders is not a valid R4 Bundle: {first_error(exc)}") from exc
    return DraftOrders(bundle=bundle, service_requests=service_requests, other_orders=other)


def first_error(exc: ValidationError) -> str:
    """Where and what the first validation problem is, without the offending value."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))


def _required_string(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} is required and must be a non-empty string")
    if len(value) > MAX_STRING:
        raise InvalidRequest(f"{name} is longer than {MAX_STRING} characters")
    return value


def _fhir_server(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_STRING:
        raise InvalidRequest("fhirServer must be the FHIR server's base URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidRequest("fhirServer must be an http(s) base URL without query or fragment")
    return value.rstrip("/")


def _fhir_authorization(value: object) -> FhirAuthorization | None:
    """CDS Hooks 2.0 §Passing the Access Token to the CDS Service: access_token, token_type Bearer, and the rest."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("fhirAuthorization must be a JSON object")
    token = value.get("access_token")
    if not isinstance(token, str) or not token:
        raise InvalidRequest("fhirAuthorization.access_token is required")
    token_type = value.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise InvalidRequest("fhirAuthorization.token_type must be Bearer")
    expires_in = value.get("expires_in")
    if expires_in is not None and (not isinstance(expires_in, int) or isinstance(expires_in, bool)):
        raise InvalidRequest("fhirAuthorization.expires_in must be an integer (seconds)")
    optional = {}
    for name in ("scope", "subject"):
        if value.get(name) is not None and not isinstance(value.get(name), str):
            raise InvalidRequest(f"fhirAuthorization.{name} must be a string")
        optional[name] = value.get(name)
    return FhirAuthorization(access_token=token, token_type="Bearer", expires_in=expires_in, **optional)


def _context_id(context: dict, name: str, *, required: bool) -> str | None:
    value = context.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not FHIR_ID.match(value):
        need = "is required and must be" if required else "must be"
        raise InvalidRequest(f"context.{name} {need} a FHIR id (letters, digits, '-', '.'; up to 64)")
    return value


def _context_reference(context: dict, name: str) -> str:
    value = context.get(name)
    if not isinstance(value, str) or not REFERENCE_KEY.match(value):
        raise InvalidRequest(f"context.{name} is required and must look like 'PractitionerRole/123'")
    return value


def _selections(context: dict) -> list[str]:
    """order-select: `selections` is REQUIRED, the ids ('Type/id') of the newly selected orders."""
    value = context.get("selections")
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and REFERENCE_KEY.match(s)
                                                           for s in value):
        raise InvalidRequest("context.selections is required for order-select: a non-empty array of "
                             "'Type/id' references into draftOrders")
    return value


def _quote(value: str) -> str:
    return repr(value[:60])
