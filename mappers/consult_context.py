"""What a consult mapper needs to know about the referral it answers."""

from dataclasses import dataclass, field

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient


@dataclass(frozen=True)
class ConsultContext:
    """The referral a consult answers: its patient, its order and the diagnoses that were referred."""

    referral_id: str
    patient: Patient  # the EHR's Patient (its id is the EHR's id), copied from the packet
    service_request_identifier: Identifier  # the referral ServiceRequest's business identifier
    service_request_ref: str | None = None  # "ServiceRequest/<EHR id>" once the EHR holds it
    referred_conditions: list[Condition] = field(default_factory=list)  # as sent in the packet
    questions: list[str] = field(default_factory=list)  # the clinician's question, then the patient's
    ehr_base_url: str | None = None  # the EHR the referred Conditions live on
    referred_full_urls: dict[str, str] = field(default_factory=dict)  # "Condition/<EHR id>" → its packet fullUrl
