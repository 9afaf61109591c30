"""The CDS Services we advertise (CDS Hooks 2.0 §Discovery) and the prefetch templates they ask for.

CDS Hooks 2.0 §Discovery / Response: each CDS Service is described by ONE `hook`, a `description`, an `id`
(the `{id}` in `{baseUrl}/cds-services/{id}`) and optional `prefetch` templates. Issue 8 asks for "a service
`second-opinion-referral` for `order-select` and `order-sign`"; as a service has exactly one hook, that is two
services sharing one implementation:

- `second-opinion-referral`        hook `order-sign`   (the id the issue names; answers when the order is signed)
- `second-opinion-referral-select` hook `order-select` (answers while the order is drafted; adds a suggestion)

Each endpoint answers only its own hook: a call with the other hook is a 400 that names the right service.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

SERVICE_ID_SIGN = "second-opinion-referral"
SERVICE_ID_SELECT = "second-opinion-referral-select"
HOOK_ORDER_SIGN = "order-sign"
HOOK_ORDER_SELECT = "order-select"

# CDS Hooks 2.0 §Prefetch Template: key → FHIR read or search with prefetch tokens from the hook context.
# `_include` is outside the spec's RECOMMENDED query subset (§Prefetch query restrictions): a CDS client that
# cannot honour it leaves the key out and the service runs that search itself. Encounter is asked for because
# the readiness check looks for a discharge summary after every inpatient stay.
PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
    "reports": "DiagnosticReport?patient={{context.patientId}}&_include=DiagnosticReport:result",
    "medications": "MedicationRequest?patient={{context.patientId}}",
    "documents": "DocumentReference?patient={{context.patientId}}",
    "carePlans": "CarePlan?patient={{context.patientId}}",
    "encounters": "Encounter?patient={{context.patientId}}",
}

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z0-9_]+)\s*\}\}")

DESCRIPTION = (
    "When a clinician orders a second-opinion referral (ServiceRequest coded SNOMED CT 3457005 'Patient referral' "
    "or with reason HL7 v2-0336 'S' 'Second Opinion'), reports how complete the referral packet would be: "
    "problems and reports found, and what a consultant will miss (pathology report, operative note, discharge "
    "summary, treatment plan, medication doses), with a link to review the packet in the second-opinion app.")


@dataclass(frozen=True)
class CdsService:
    """One CDS Service: its id, the hook it answers, and how discovery describes it."""

    id: str
    hook: str
    title: str
    description: str = DESCRIPTION

    def discovery(self) -> dict:
        """The service as CDS Hooks 2.0 §Discovery describes it."""
        return {"hook": self.hook, "title": self.title, "description": self.description, "id": self.id,
                "prefetch": dict(PREFETCH)}


SERVICES: dict[str, CdsService] = {
    SERVICE_ID_SIGN: CdsService(SERVICE_ID_SIGN, HOOK_ORDER_SIGN, "Second-opinion referral: packet readiness"),
    SERVICE_ID_SELECT: CdsService(SERVICE_ID_SELECT, HOOK_ORDER_SELECT,
                                  "Second-opinion referral: packet readiness while ordering"),
}


def find_service(service_id: str) -> CdsService | None:
    """The service with this id, or None."""
    return SERVICES.get(service_id)


def service_for_hook(hook: str) -> CdsService | None:
    """The service that answers this hook, or None."""
    return next((s for s in SERVICES.values() if s.hook == hook), None)


@dataclass(frozen=True)
class PrefetchQuery:
    """A prefetch template with its tokens filled in: a read (resource_id) or a search (params)."""

    key: str
    resource_type: str
    resource_id: str | None
    params: dict[str, str]


def expand_prefetch(key: str, context: dict[str, str]) -> PrefetchQuery:
    """Fill a template's `{{context.x}}` tokens (CDS Hooks 2.0 §Prefetch tokens) and split it into a query."""
    url = _TOKEN.sub(lambda m: context[m.group(1)], PREFETCH[key])
    path, _, query = url.partition("?")
    resource_type, _, resource_id = path.partition("/")
    return PrefetchQuery(key, resource_type, resource_id or None, dict(parse_qsl(query)))


def prefetch_resource_type(key: str) -> str:
    """The resource type a prefetch key reads or searches."""
    return PREFETCH[key].split("?", 1)[0].split("/", 1)[0]
