"""Readiness of the draft packet → CDS Hooks cards (CDS Hooks 2.0 §CDS Service Response / Card Attributes).

A card: `uuid` (for feedback), `summary` (< 140 characters), `detail` (GitHub Flavored Markdown), `indicator`
(`warning` when the readiness check finds gaps or the record could not be read in full, else `info`), `source`
(label, optional url, topic), a `smart` link to our app whose `appContext` names the draft ServiceRequest
(§Link), and — on order-select — one suggestion whose `create` actions (§Action) add a CommunicationRequest
per gap asking for the missing information, with `selectionBehavior` `at-most-one` (required with suggestions).
Optional elements without a value are left out ("JSON elements SHALL NOT be null ... or empty").
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.communicationrequest import CommunicationRequest, CommunicationRequestPayload
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest

from mappers import systems
from mappers.readiness import ReadinessItem, assess_readiness, gaps
from mappers.record import PatientRecord
from service.cds.orders import order_key
from service.cds.services import prefetch_resource_type

SOURCE_LABEL = "Second-opinion referral service"
MAX_SUMMARY = 139  # "<140-character summary"
GAP_PHRASES = {
    "pathology-report": "pathology report missing",
    "operative-note": "operative note missing",
    "discharge-summary": "discharge summary missing",
    "care-plan": "no current care plan",
    "medication-dosage": "medication dose missing",
}
# What each readiness item reads: a gap is only claimed when all of it was available (an unread CarePlan search
# is not "no care plan"); the card says the record is incomplete instead.
GAP_NEEDS = {
    "pathology-report": {"Condition", "DiagnosticReport", "DocumentReference"},
    "operative-note": {"Procedure", "DocumentReference"},
    "discharge-summary": {"Encounter", "DocumentReference"},
    "care-plan": {"CarePlan"},
    "medication-dosage": {"MedicationRequest"},
}
INACTIVE_CONDITION = frozenset({"entered-in-error", "refuted"})
INACTIVE_REPORT = frozenset({"entered-in-error", "cancelled"})


@dataclass(frozen=True)
class Assessment:
    """What the card says about the record: counts, readiness gaps, and which parts could not be read."""

    problems: int
    reports: int
    gaps: list[ReadinessItem]
    unavailable: list[str] = field(default_factory=list)  # resource types neither prefetched nor read
    from_prefetch: list[str] = field(default_factory=list)
    from_ehr: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CardContext:
    """What every card of one call shares."""

    hook: str
    patient_id: str
    user_id: str
    launch_url: str
    source_url: str | None
    now: datetime
    new_uuid: Callable[[], str]


def assess(record: PatientRecord, *, unavailable: list[str], from_prefetch: list[str],
           from_ehr: list[str]) -> Assessment:
    """Count problems and reports and run the readiness check (mappers.readiness)."""
    conditions = [c for c in record.of_type("Condition") if _code(c.verificationStatus) not in INACTIVE_CONDITION]
    reports = [r for r in record.of_type("DiagnosticReport") if r.status not in INACTIVE_REPORT]
    report_keys = {f"DiagnosticReport/{r.id}" for r in reports}
    # A DocumentReference that only mirrors a DiagnosticReport (context.related) is the same report.
    documents = [d for d in record.of_type("DocumentReference")
                 if d.status != "entered-in-error" and not _mirrors_report(d, report_keys)]
    known_gaps = [g for g in gaps(assess_readiness(record)) if not GAP_NEEDS.get(g.item, set()) & set(unavailable)]
    return Assessment(problems=len(conditions), reports=len(reports) + len(documents),
                      gaps=known_gaps, unavailable=unavailable,
                      from_prefetch=from_prefetch, from_ehr=from_ehr)


def readiness_card(order: ServiceRequest, assessment: Assessment, ctx: CardContext) -> dict:
    """The card for one referral order."""
    incomplete = bool(assessment.unavailable)
    card = {
        "uuid": ctx.new_uuid(),
        "summary": readiness_summary(assessment),
        "detail": readiness_detail(assessment),
        "indicator": "warning" if assessment.gaps or incomplete else "info",
        "source": _source(ctx),
        "links": [_launch_link(order, ctx)],
    }
    if ctx.hook == "order-select" and assessment.gaps:
        card["suggestions"] = [_request_missing_suggestion(order, assessment.gaps, ctx)]
        card["selectionBehavior"] = "at-most-one"
    return card


def pending_card(order: ServiceRequest, budget_s: float, ctx: CardContext) -> dict:
    """The card when reading the record outlived the hook's time budget: the packet is still being prepared."""
    return {
        "uuid": ctx.new_uuid(),
        "summary": "Second-opinion packet is being prepared — open it to review what the consultant will get",
        "detail": (f"The EHR did not return the record within {budget_s:g} s, so the readiness check has not run "
                   "yet. Reading goes on in the background; the next check for this patient, or the app, "
                   "will show the result."),
        "indicator": "info",
        "source": _source(ctx),
        "links": [_launch_link(order, ctx)],
    }


def readiness_summary(assessment: Assessment) -> str:
    """"Second-opinion packet: 6 problems, 7 reports — pathology report missing" (under 140 characters)."""
    head = (f"Second-opinion packet: {_plural(assessment.problems, 'problem')}, "
            f"{_plural(assessment.reports, 'report')}")
    phrases = list(dict.fromkeys(GAP_PHRASES.get(g.item, g.item.replace("-", " ") + " missing")
                                 for g in assessment.gaps))
    if assessment.unavailable:
        phrases.append("record incomplete")
    tail = ", ".join(phrases) if phrases else "ready for review"
    summary = f"{head} — {tail}"
    if len(summary) > MAX_SUMMARY:
        summary = f"{head} — {_plural(len(assessment.gaps), 'gap')} to fill"
    return summary[:MAX_SUMMARY]


def readiness_detail(assessment: Assessment) -> str:
    """Markdown: what is missing, then where the data came from."""
    lines = []
    if assessment.gaps:
        lines.append("**Missing before the packet goes to the consultant:**")
        lines += [f"- {markdown_text(g.message)}" for g in assessment.gaps]
    else:
        lines.append("Everything the readiness check looks for is in the record.")
    if assessment.unavailable:
        lines.append("")
        lines.append("**Not available in full to this check** (not prefetched, not read from the EHR): "
                     + ", ".join(assessment.unavailable) + ".")
    sources = []
    if assessment.from_prefetch:
        sources.append("prefetch: " + ", ".join(assessment.from_prefetch))
    if assessment.from_ehr:
        sources.append("read from the EHR: " + ", ".join(assessment.from_ehr))
    if sources:
        lines.append("")
        lines.append("_Sources — " + "; ".join(sources) + "._")
    return "\n".join(lines)


def markdown_text(text: str) -> str:
    """Escape the characters GitHub Flavored Markdown would interpret."""
    out = []
    for char in text:
        if char in "\\`*_[]<>|~":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def communication_request(order: ServiceRequest, item: ReadinessItem, ctx: CardContext) -> CommunicationRequest:
    """A draft request for one missing piece of supporting information, tied to the referral order."""
    key = order_key(order)
    return CommunicationRequest(
        status="draft",
        category=[CodeableConcept(text="Second-opinion referral: supporting information")],
        priority="routine",
        subject=Reference(reference=f"Patient/{ctx.patient_id}"),
        about=[Reference(reference=item.about)] if item.about else None,
        basedOn=[Reference(reference=key)] if key else None,
        payload=[CommunicationRequestPayload(contentString=f"{item.message} Please file it so that it goes with "
                                                           "the second-opinion referral.")],
        requester=Reference(reference=ctx.user_id),
        authoredOn=ctx.now,
    )


def _request_missing_suggestion(order: ServiceRequest, items: list[ReadinessItem], ctx: CardContext) -> dict:
    actions = [{"type": "create", "description": item.message,
                "resource": communication_request(order, item, ctx).model_dump(mode="json", exclude_none=True)}
               for item in items]
    return {"label": f"Ask for the missing information ({len(items)})", "uuid": ctx.new_uuid(),
            "isRecommended": True, "actions": actions}


def _launch_link(order: ServiceRequest, ctx: CardContext) -> dict:
    """§Link: type `smart`; appContext (a string) names the draft ServiceRequest for the app."""
    app_context: dict[str, object] = {"patient": ctx.patient_id}
    if order.id:
        app_context["serviceRequest"] = f"ServiceRequest/{order.id}"
    identifiers = [{k: v for k, v in (("system", i.system), ("value", i.value)) if v} for i in order.identifier or []]
    if identifiers:
        app_context["serviceRequestIdentifier"] = identifiers[0]
    return {"label": "Review the second-opinion packet", "url": ctx.launch_url, "type": "smart",
            "appContext": json.dumps(app_context, separators=(",", ":"))}


def _source(ctx: CardContext) -> dict:
    source: dict[str, object] = {"label": SOURCE_LABEL,
                                 "topic": {"system": systems.SNOMED, "code": systems.SNOMED_PATIENT_REFERRAL,
                                           "display": systems.SNOMED_PATIENT_REFERRAL_DISPLAY}}
    if ctx.source_url:
        source["url"] = ctx.source_url
    return source


def unavailable_types(keys: list[str]) -> list[str]:
    """Prefetch keys → the resource types a reader recognises, in template order."""
    return list(dict.fromkeys(prefetch_resource_type(k) for k in keys))


def _mirrors_report(document, report_keys: set[str]) -> bool:  # noqa: ANN001 - an R4B DocumentReference
    related = (document.context.related or []) if document.context else []
    return any(ref == key or ref.endswith("/" + key) for rel in related if (ref := rel.reference or "")
               for key in report_keys)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _code(concept: CodeableConcept | None) -> str | None:
    return concept.coding[0].code if concept is not None and concept.coding else None
