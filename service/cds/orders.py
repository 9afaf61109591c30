"""Which draft orders are second-opinion referrals."""

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.servicerequest import ServiceRequest

from mappers import systems
from service.cds.hook_request import HookRequest
from service.errors import InvalidRequest

INACTIVE_STATUSES = frozenset({"revoked", "completed", "entered-in-error"})


def is_referral(order: ServiceRequest) -> bool:
    """A referral: category or code SNOMED CT 3457005 "Patient referral", or reason v2-0336 `S` "Second Opinion"."""
    concepts = [*(order.category or []), *([order.code] if order.code else [])]
    if _has(concepts, systems.SNOMED, systems.SNOMED_PATIENT_REFERRAL):
        return True
    return _has(order.reasonCode or [], systems.V2_0336, systems.V2_0336_SECOND_OPINION)


def referral_orders(request: HookRequest) -> list[ServiceRequest]:
    """The referrals this call is about, checked to be for the patient in context.

    order-select: only the newly selected orders (`context.selections`): "Decision support should focus on the
    'selected' orders" (order-select hook, §Context), so a referral picked earlier in the session is not
    repeated at every later selection. order-sign: every draft order.
    """
    orders = request.draft_orders.service_requests
    if request.selections is not None:
        selected = set(request.selections)
        orders = [o for o in orders if o.id and f"ServiceRequest/{o.id}" in selected]
    referrals = [o for o in orders if is_referral(o) and o.status not in INACTIVE_STATUSES]
    for order in referrals:
        subject = order.subject.reference if order.subject else None
        if subject and not _is_patient(subject, request.patient_id):
            raise InvalidRequest(f"draft ServiceRequest{'/' + order.id if order.id else ''} is for another patient "
                                 "than context.patientId")
    return referrals


def order_key(order: ServiceRequest) -> str | None:
    """'ServiceRequest/<id>' when the draft order has an id."""
    return f"ServiceRequest/{order.id}" if order.id else None


def _is_patient(reference: str, patient_id: str) -> bool:
    return reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}")


def _has(concepts: list[CodeableConcept], system: str, code: str) -> bool:
    return any(c.system == system and c.code == code for concept in concepts for c in concept.coding or [])
