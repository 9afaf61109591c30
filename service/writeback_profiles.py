"""Write-back profiles: what each kind of EHR accepts, as data, and the pure functions that apply a profile.

A profile decides which steps a consult's write-back runs, which attachments its DocumentReference carries and in
which shape, and whether the EHR's Task follows our status. Code reads these fields; it never asks which EHR it
talks to.
"""

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.documentreference import DocumentReference, DocumentReferenceContext
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.provenance import Provenance, ProvenanceAgent
from fhir.resources.R4B.reference import Reference

from mappers import systems
from mappers.docref import FHIR_JSON, XHTML_UTF8
from service.errors import ConfigurationError

# Consult write-back steps, in the order they may run (a profile picks a subsequence).
STEP_BUNDLE = "bundle"                        # POST the consult document (conditional on its identifier)
STEP_DOCUMENT_REFERENCE = "document_reference"  # POST the DocumentReference (conditional on its identifier)
STEP_TASK = "task"                            # PUT the EHR's Task: completed, output → DocumentReference
STEP_PROVENANCE = "provenance"                # PUT a Provenance (id we choose) for what we wrote
STEP_TASK_STATUS = "task_status"              # PUT the EHR's Task mirroring the referral's status (lifecycle)

SERVICE_DISPLAY = "second-opinion referral service"
PROVENANCE_NAMESPACE = uuid.UUID("0b6f0c1e-5d38-4c1a-9a57-3f1f6d0f2a61")  # Provenance ids: uuid5(this, job)
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


@dataclass(frozen=True)
class WritebackProfile:
    """What one kind of EHR accepts from the write-back."""

    name: str
    consult_steps: tuple[str, ...]
    attachments: tuple[str, ...]        # DocumentReference attachment content types kept, in this order
    task_writes: bool                   # the EHR accepts Task updates: it completes and mirrors our status
    final_doc_status: bool = False      # docStatus is always final
    period_end: bool = False            # context.period.end is set (the time the note was performed)
    datetimes_with_time: bool = False   # no date-only values anywhere (a date without time is dropped)
    spaced_empty_tags: bool = False     # XHTML empty elements written `<br />`


PROFILES: dict[str, WritebackProfile] = {
    "document": WritebackProfile(
        "document", (STEP_BUNDLE, STEP_DOCUMENT_REFERENCE, STEP_TASK, STEP_PROVENANCE),
        attachments=(FHIR_JSON, XHTML_UTF8), task_writes=True),
    "docref-only": WritebackProfile(
        "docref-only", (STEP_DOCUMENT_REFERENCE, STEP_TASK, STEP_PROVENANCE),
        attachments=(FHIR_JSON, XHTML_UTF8), task_writes=True),
    # Oracle Health (Cerner) Millennium: one XHTML attachment, docStatus final, context.period.end, timed dates;
    # its Task and Provenance are not writable by apps.
    "cerner": WritebackProfile(
        "cerner", (STEP_DOCUMENT_REFERENCE,), attachments=(XHTML_UTF8,), task_writes=False,
        final_doc_status=True, period_end=True, datetimes_with_time=True, spaced_empty_tags=True),
}
DEFAULT_PROFILE = "document"


def get_profile(name: str) -> WritebackProfile:
    """The named profile; ConfigurationError (at startup) for an unknown name."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigurationError(f"unknown write-back profile {name!r}: choose one of {', '.join(PROFILES)}") from None


def shape_document_reference(docref: DocumentReference, profile: WritebackProfile, *, now: datetime) -> DocumentReference:
    """A copy of the DocumentReference as the profile's EHR accepts it."""
    shaped = docref.model_copy(deep=True)
    by_type = {c.attachment.contentType: c for c in shaped.content}
    missing = [t for t in profile.attachments if t not in by_type]
    if missing:
        raise ValueError(f"the DocumentReference has no {missing[0]} attachment for the {profile.name} profile")
    shaped.content = [by_type[t] for t in profile.attachments]
    for content in shaped.content:
        if profile.spaced_empty_tags and content.attachment.contentType == XHTML_UTF8:
            _set_data(content.attachment, spaced_empty_tags(content.attachment.data.decode("utf-8")))  # decoded bytes
        if profile.datetimes_with_time and not _has_time(content.attachment.creation):
            content.attachment.creation = None
    if profile.final_doc_status:
        shaped.docStatus = "final"
    if profile.period_end:
        performed = next((c.attachment.creation for c in docref.content if _has_time(c.attachment.creation)), now)
        context = shaped.context or DocumentReferenceContext()
        context.period = Period(start=performed, end=performed)
        shaped.context = context
    return shaped


def spaced_empty_tags(xhtml: str) -> str:
    """`<br/>` → `<br />` (lxml escapes '>' in text and attributes, so '/>' only ends empty elements)."""
    return re.sub(r"(?<! )/>", " />", xhtml)


def provenance_id(job_id: int, referral_id: str) -> str:
    """The id we choose for a job's Provenance, the same on every retry (so the PUT is idempotent)."""
    return str(uuid.uuid5(PROVENANCE_NAMESPACE, f"{referral_id}/{job_id}"))


def build_provenance(targets: list[str], *, resource_id: str, now: datetime) -> Provenance:
    """A Provenance for resources we wrote: the targets, recorded now, our service as the assembling agent."""
    return Provenance(
        id=resource_id,
        target=[Reference(reference=t) for t in targets],
        recorded=now,
        activity=CodeableConcept(coding=[Coding(system=DATA_OPERATION, code="CREATE", display="create")]),
        agent=[ProvenanceAgent(
            type=CodeableConcept(coding=[Coding(system=systems.PROVENANCE_PARTICIPANT_TYPE, code="assembler",
                                                display="Assembler")]),
            who=Reference(type="Device", display=SERVICE_DISPLAY))],
    )


def _set_data(attachment, text: str) -> None:  # noqa: ANN001 - an R4B Attachment
    data = text.encode("utf-8")
    attachment.data = base64.b64encode(data).decode("ascii")
    attachment.size = len(data)
    attachment.hash = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")  # noqa: S324 - FHIR's SHA-1


def _has_time(value: object) -> bool:
    return isinstance(value, datetime)
