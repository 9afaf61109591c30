"""Results section (2.16.840.1.113883.10.20.22.2.3/.3.1): Result Organizer → DiagnosticReport + Observations."""

from typing import Any

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from fhir.resources.R4B.range import Range
from lxml import etree

from mappers.ccda import ccda
from mappers.ccda.context import EntryContext, Mapped, ref
from mappers.ccda.datatypes import codeable_concept, identifiers, quantity
from mappers.oids import OID_RESULT_OBSERVATION, OID_RESULT_ORGANIZER

DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_OBSERVATION_STATUS = {"completed": "final", "active": "preliminary", "aborted": "cancelled",
                       "cancelled": "cancelled", "nullified": "entered-in-error", "held": "registered",
                       "suspended": "registered", "new": "registered"}
_REPORT_STATUS = {"completed": "final", "active": "partial", "aborted": "cancelled", "cancelled": "cancelled",
                  "nullified": "entered-in-error", "held": "registered", "suspended": "registered",
                  "new": "registered"}
_ABSENT = {"UNK": "unknown", "ASKU": "asked-unknown", "NAV": "temp-unknown", "NASK": "not-asked",
           "MSK": "masked", "NA": "not-applicable", "NI": "unknown", "OTH": "unknown", "NINF": "unknown",
           "PINF": "unknown"}
_CODED = {"CD", "CE", "CV", "CO", "CS"}
_TEXT = {"ST", "ED", "SC"}


def map_result_entry(entry: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map one section entry: a Result Organizer, or a bare Result Observation."""
    mapped: list[Mapped] = []
    for organizer in ccda.each(entry, "hl7:organizer"):
        mapped.extend(map_result_organizer(organizer, ctx))
    for obs in ccda.each(entry, "hl7:observation"):
        observation = map_result_observation(obs, ctx)
        if observation is not None:
            mapped.append(Mapped(entry=observation))
    return mapped


def map_result_organizer(organizer: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map a Result Organizer (2.16.840.1.113883.10.20.22.4.1) to a DiagnosticReport with its Observations.

    DiagnosticReport.code is required: an organizer without a usable code yields its Observations alone
    (listed in the section) rather than a report with an invented code.
    """
    observations = [o for o in (map_result_observation(obs, ctx)
                                for obs in ccda.each(organizer, "hl7:component/hl7:observation")) if o is not None]
    code = codeable_concept(ccda.first(organizer, "hl7:code"), ctx.narrative)
    if code is None:
        ctx.warn(f"result organizer ({OID_RESULT_ORGANIZER}) without a code: its observations are listed alone")
        return [Mapped(entry=o) for o in observations]
    point, span = ccda.effective(ccda.first(organizer, "hl7:effectiveTime"))
    report = DiagnosticReport(
        id=ctx.new_id(),
        identifier=identifiers(organizer) or None,
        status=_REPORT_STATUS.get(ccda.attr(organizer, "hl7:statusCode", "code") or "", "unknown"),
        code=code,
        subject=ctx.subject,
        effectiveDateTime=point,
        effectivePeriod=span,
        result=[ref(o) for o in observations] or None,
    )
    return [Mapped(entry=report, related=tuple(observations))]


def map_result_observation(obs: etree._Element, ctx: EntryContext) -> Observation | None:
    """Map a Result Observation (2.16.840.1.113883.10.20.22.4.2) to an Observation.

    value by xsi:type: PQ → valueQuantity (UCUM), IVL_PQ → valueRange, CD/CE/CV/CO → valueCodeableConcept,
    ST/ED → valueString, INT → valueInteger, REAL → valueQuantity, BL → valueBoolean, TS → valueDateTime;
    a nullFlavor value becomes dataAbsentReason (C-CDA on FHIR, Results).
    """
    code = codeable_concept(ccda.first(obs, "hl7:code"), ctx.narrative) or _text_concept(obs, ctx)
    if code is None:
        ctx.warn(f"result observation ({OID_RESULT_OBSERVATION}) without a code: skipped")
        return None
    point, span = ccda.effective(ccda.first(obs, "hl7:effectiveTime"))
    interpretation = [c for c in (codeable_concept(i, ctx.narrative)
                                  for i in ccda.each(obs, "hl7:interpretationCode")) if c is not None]
    return Observation(
        id=ctx.new_id(),
        identifier=identifiers(obs) or None,
        status=_OBSERVATION_STATUS.get(ccda.attr(obs, "hl7:statusCode", "code") or "", "unknown"),
        code=code,
        subject=ctx.subject,
        effectiveDateTime=point,
        effectivePeriod=span,
        interpretation=interpretation or None,
        referenceRange=_reference_ranges(obs, ctx) or None,
        **observation_value(ccda.first(obs, "hl7:value"), ctx),
    )


def observation_value(value: etree._Element | None, ctx: EntryContext) -> dict[str, Any]:
    """Return the Observation value[x] (or dataAbsentReason) fields for a C-CDA ANY value."""
    if value is None:
        return {}
    null = value.get("nullFlavor")
    kind = ccda.xsi_type(value) or ("CD" if value.get("code") else "PQ" if value.get("value") else "ST")
    if kind in _CODED:
        concept = codeable_concept(value, ctx.narrative)
        return {"valueCodeableConcept": concept} if concept else _absent(null)
    if null is not None:
        return _absent(null)
    return _simple_value(value, kind)


def _simple_value(value: etree._Element, kind: str) -> dict[str, Any]:
    """Map the non-coded value types (PQ, IVL_PQ, INT, REAL, BL, TS, ST...)."""
    raw = (value.get("value") or "").strip()
    if kind in ("PQ", "REAL"):
        number = quantity(value)
        if number is not None:
            return {"valueQuantity": number}
        text = ccda.clean(f"{raw} {value.get('unit') or ''}")
        return {"valueString": text} if text else {}
    if kind == "IVL_PQ":
        low, high = quantity(ccda.first(value, "hl7:low")), quantity(ccda.first(value, "hl7:high"))
        return {"valueRange": Range(low=low, high=high)} if (low or high) else {}
    if kind == "INT" and raw.lstrip("-").isdigit() and abs(int(raw)) < 2**31:
        return {"valueInteger": int(raw)}
    if kind == "BL" and raw in ("true", "false"):
        return {"valueBoolean": raw == "true"}
    if kind == "TS" and ccda.ts_to_fhir(raw):
        return {"valueDateTime": ccda.ts_to_fhir(raw)}
    text = ccda.text_of(value) if kind in _TEXT or not raw else raw
    return {"valueString": text} if text else {}


def _absent(null: str | None) -> dict[str, Any]:
    """Return a dataAbsentReason for a nullFlavor (or nothing)."""
    if null is None:
        return {}
    code = _ABSENT.get(null.strip(), "unknown")
    return {"dataAbsentReason": CodeableConcept(coding=[Coding(system=DATA_ABSENT_REASON, code=code)])}


def _reference_ranges(obs: etree._Element, ctx: EntryContext) -> list[ObservationReferenceRange]:
    """Map referenceRange/observationRange: IVL_PQ low/high, or the range's text."""
    ranges = []
    for observation_range in ccda.each(obs, "hl7:referenceRange/hl7:observationRange"):
        value = ccda.first(observation_range, "hl7:value")
        low, high = quantity(ccda.first(value, "hl7:low")), quantity(ccda.first(value, "hl7:high"))
        if low is not None and high is not None and (low.unit != high.unit or high.value < low.value):
            low = high = None
        text_el = ccda.first(observation_range, "hl7:text")
        text = ctx.narrative.resolve(ccda.attr(text_el, "hl7:reference", "value")) or ccda.clean(
            "".join(text_el.xpath("text()")) if text_el is not None else None)
        if ccda.xsi_type(value) in _TEXT and not text:
            text = ccda.text_of(value)
        if low or high or text:
            ranges.append(ObservationReferenceRange(low=low, high=high, text=text))
    return ranges


def _text_concept(obs: etree._Element, ctx: EntryContext) -> CodeableConcept | None:
    """Return a text-only code from the observation's narrative reference (when its code is a nullFlavor)."""
    text = ctx.narrative.resolve(ccda.attr(obs, "hl7:text/hl7:reference", "value"))
    return CodeableConcept(text=text) if text else None

