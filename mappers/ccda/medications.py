"""Medications section (2.16.840.1.113883.10.20.22.2.1/.1.1): Medication Activity → MedicationStatement."""

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.dosage import Dosage, DosageDoseAndRate
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.range import Range
from fhir.resources.R4B.timing import Timing, TimingRepeat
from lxml import etree

from mappers.ccda import ccda
from mappers.ccda.context import EntryContext, Mapped
from mappers.ccda.datatypes import codeable_concept, decimal, identifiers, quantity
from mappers.oids import OID_INDICATION, OID_MEDICATION_ACTIVITY

_STATEMENT_STATUS = {"active": "active", "completed": "completed", "aborted": "stopped", "cancelled": "not-taken",
                     "held": "on-hold", "suspended": "on-hold", "nullified": "entered-in-error", "new": "intended"}
_PERIOD_UNITS = {"s", "min", "h", "d", "wk", "mo", "a"}
# FHIR event-timing reuses the v3 TimingEvent codes that EIVL_TS/event carries.
_EVENTS = {"HS", "WAKE", "C", "CM", "CD", "CV", "AC", "ACM", "ACD", "ACV", "PC", "PCM", "PCD", "PCV"}
PLANNED_MOODS = {"INT", "RQO", "PRMS", "PRP", "ARQ", "APT"}


def map_medication_entry(entry: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map one section entry holding a Medication Activity (substanceAdministration)."""
    mapped = [map_medication_activity(sa, ctx) for sa in ccda.each(entry, "hl7:substanceAdministration")]
    return [Mapped(entry=m) for m in mapped if m is not None]


def map_medication_activity(sa: etree._Element, ctx: EntryContext) -> MedicationStatement | None:
    """Map a Medication Activity (2.16.840.1.113883.10.20.22.4.16) to a MedicationStatement.

    Status from statusCode (C-CDA on FHIR, Medications): a moodCode of INT means "intended", negationInd
    "not-taken"; the IVL_TS effectiveTime is the period, the PIVL_TS/EIVL_TS one the dosage timing.
    """
    medication = medication_code(sa, ctx)
    if medication is None:
        ctx.warn(f"medication activity ({OID_MEDICATION_ACTIVITY}) without a medication code: skipped")
        return None
    point, span = ccda.effective(_main_effective_time(sa))
    dosage = map_dosage(sa, ctx)
    reasons = [r for r in (codeable_concept(ccda.first(obs, "hl7:value"), ctx.narrative)
                           for obs in ccda.with_template(sa, "hl7:entryRelationship/hl7:observation",
                                                         OID_INDICATION)) if r is not None]
    return MedicationStatement(
        id=ctx.new_id(),
        identifier=identifiers(sa) or None,
        status=_statement_status(sa),
        medicationCodeableConcept=medication,
        subject=ctx.subject,
        effectiveDateTime=point,
        effectivePeriod=span,
        dosage=[dosage] if dosage else None,
        reasonCode=reasons or None,
    )


def medication_code(sa: etree._Element, ctx: EntryContext) -> CodeableConcept | None:
    """Return the manufacturedMaterial code (RxNorm, with translations), or its name as text."""
    material = ccda.first(sa, "hl7:consumable/hl7:manufacturedProduct/hl7:manufacturedMaterial")
    code = codeable_concept(ccda.first(material, "hl7:code"), ctx.narrative)
    if code is not None:
        return code
    name = ccda.text_of(ccda.first(material, "hl7:name"))
    return CodeableConcept(text=name) if name else None


def map_dosage(sa: etree._Element, ctx: EntryContext) -> Dosage | None:
    """Map dose, route, site, timing and sig text of a substanceAdministration to a Dosage (None if none)."""
    dose = _dose_and_rate(ccda.first(sa, "hl7:doseQuantity"))
    parts = {
        "text": _sig_text(sa, ctx),
        "timing": map_timing(sa),
        "route": codeable_concept(ccda.first(sa, "hl7:routeCode"), ctx.narrative),
        "site": codeable_concept(ccda.first(sa, "hl7:approachSiteCode"), ctx.narrative),
        "doseAndRate": [dose] if dose else None,
    }
    if not any(parts.values()):
        return None
    return Dosage(**parts)


def map_timing(sa: etree._Element) -> Timing | None:
    """Map the first PIVL_TS (period, frequency 1) or EIVL_TS (event → when) effectiveTime to a Timing."""
    for time in ccda.each(sa, "hl7:effectiveTime"):
        kind = ccda.xsi_type(time)
        if kind == "PIVL_TS":
            repeat = _periodic(time)
        elif kind == "EIVL_TS":
            event = ccda.attr(time, "hl7:event", "code")
            repeat = TimingRepeat(when=[event]) if event in _EVENTS else None
        else:
            continue
        if repeat is not None:
            return Timing(repeat=repeat)
    return None


def _periodic(time: etree._Element) -> TimingRepeat | None:
    """Map a PIVL_TS period (PQ, or IVL_PQ low/high → period/periodMax) to a TimingRepeat."""
    period_el = ccda.first(time, "hl7:period")
    if ccda.is_null(period_el):
        return None
    low, high = ccda.first(period_el, "hl7:low"), ccda.first(period_el, "hl7:high")
    source = low if low is not None else period_el
    value, unit = decimal(source.get("value")), (source.get("unit") or "").strip()
    if value is None or value <= 0 or unit not in _PERIOD_UNITS:
        return None
    high_value = decimal(high.get("value")) if high is not None else None
    if high_value is not None and (high_value < value or (high.get("unit") or "").strip() != unit):
        high_value = None
    return TimingRepeat(frequency=1, period=value, periodMax=high_value, periodUnit=unit)


def _dose_and_rate(dose: etree._Element | None) -> DosageDoseAndRate | None:
    """Map doseQuantity (PQ, or IVL_PQ low/high) to a DosageDoseAndRate."""
    if ccda.is_null(dose):
        return None
    single = quantity(dose)
    if single is not None:
        return DosageDoseAndRate(doseQuantity=single)
    low, high = quantity(ccda.first(dose, "hl7:low")), quantity(ccda.first(dose, "hl7:high"))
    if low is None and high is None:
        return None
    if low is not None and high is not None and high.value < low.value:
        high = None
    return DosageDoseAndRate(doseRange=Range(low=low, high=high))


def _sig_text(sa: etree._Element, ctx: EntryContext) -> str | None:
    """Return the free-text sig: the narrative a text/reference points at, else the text itself."""
    text_el = ccda.first(sa, "hl7:text")
    if text_el is None:
        return None
    resolved = ctx.narrative.resolve(ccda.attr(text_el, "hl7:reference", "value"))
    return resolved or ccda.clean("".join(text_el.xpath("text()")))


def _main_effective_time(sa: etree._Element) -> etree._Element | None:
    """Return the effectiveTime that is the administration period (IVL_TS or untyped), not the frequency."""
    for time in ccda.each(sa, "hl7:effectiveTime"):
        if ccda.xsi_type(time) in (None, "IVL_TS", "TS"):
            return time
    return None


def _statement_status(sa: etree._Element) -> str:
    """Return the MedicationStatement status from negationInd, moodCode and statusCode."""
    if (sa.get("negationInd") or "").strip().lower() == "true":
        return "not-taken"
    status = ccda.attr(sa, "hl7:statusCode", "code")
    if (sa.get("moodCode") or "").strip() in PLANNED_MOODS and status not in ("completed", "aborted"):
        return "intended"
    return _STATEMENT_STATUS.get(status or "", "unknown")
