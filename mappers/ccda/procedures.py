"""Procedures section (2.16.840.1.113883.10.20.22.2.7/.7.1): Procedure Activity → Procedure."""

from fhir.resources.R4B.procedure import Procedure
from lxml import etree

from mappers.ccda import ccda
from mappers.ccda.assessment_plan import map_planned_item
from mappers.ccda.context import EntryContext, Mapped
from mappers.ccda.datatypes import codeable_concept, identifiers
from mappers.oids import OID_PROCEDURE_ACT, OID_PROCEDURE_OBSERVATION, OID_PROCEDURE_PROCEDURE

PROCEDURE_TEMPLATES = (OID_PROCEDURE_PROCEDURE, OID_PROCEDURE_OBSERVATION, OID_PROCEDURE_ACT)
_STATUS = {"completed": "completed", "active": "in-progress", "aborted": "stopped", "cancelled": "not-done",
           "new": "preparation", "held": "on-hold", "suspended": "on-hold", "nullified": "entered-in-error"}


def map_procedure_entry(entry: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map one section entry: a Procedure Activity Procedure/Observation/Act (planned ones → ServiceRequest)."""
    mapped: list[Mapped] = []
    for statement in [*ccda.each(entry, "hl7:procedure"), *ccda.each(entry, "hl7:observation"),
                      *ccda.each(entry, "hl7:act")]:
        if (statement.get("moodCode") or "EVN").strip() != "EVN":
            mapped.extend(map_planned_item(statement, ctx))
        elif ccda.has_template(statement, *PROCEDURE_TEMPLATES) or ccda.local_name(statement) == "procedure":
            procedure = map_procedure_activity(statement, ctx)
            if procedure is not None:
                mapped.append(Mapped(entry=procedure))
    return mapped


def map_procedure_activity(el: etree._Element, ctx: EntryContext) -> Procedure | None:
    """Map a Procedure Activity Procedure/Observation/Act (4.14/4.13/4.12) to a Procedure.

    Status from statusCode (C-CDA on FHIR, Procedures); negationInd="true" → not-done; effectiveTime →
    performed[x]; targetSiteCode → bodySite.
    """
    code = codeable_concept(ccda.first(el, "hl7:code"), ctx.narrative)
    if code is None:
        ctx.warn("procedure activity without a procedure code: skipped")
        return None
    negated = (el.get("negationInd") or "").strip().lower() == "true"
    status = "not-done" if negated else _STATUS.get(ccda.attr(el, "hl7:statusCode", "code") or "", "unknown")
    point, span = ccda.effective(ccda.first(el, "hl7:effectiveTime"))
    sites = [s for s in (codeable_concept(t, ctx.narrative) for t in ccda.each(el, "hl7:targetSiteCode")) if s]
    return Procedure(
        id=ctx.new_id(),
        identifier=identifiers(el) or None,
        status=status,
        code=code,
        subject=ctx.subject,
        performedDateTime=point,
        performedPeriod=span,
        bodySite=sites or None,
    )
