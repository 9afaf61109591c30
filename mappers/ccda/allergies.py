"""Allergies section (2.16.840.1.113883.10.20.22.2.6/.6.1): Allergy Concern Act → AllergyIntolerance."""

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance, AllergyIntoleranceReaction
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from lxml import etree

from mappers import systems
from mappers.ccda import ccda
from mappers.ccda.context import EntryContext, Mapped
from mappers.ccda.datatypes import codeable_concept, identifiers
from mappers.ccda.problems import concept
from mappers.oids import (
    OID_ALLERGY_CONCERN_ACT,
    OID_ALLERGY_OBSERVATION,
    OID_ALLERGY_STATUS,
    OID_CRITICALITY_OBSERVATION,
    OID_REACTION_OBSERVATION,
    OID_SEVERITY_OBSERVATION,
)

ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
NO_KNOWN_ALLERGY = ("716186003", "No known allergy")  # SNOMED; C-CDA on FHIR maps a negated allergy to it

# Allergy observation value (SNOMED, value set 2.16.840.1.113883.3.88.12.3221.6.2) → (type, category).
_VALUE_KIND = {
    "419199007": ("allergy", None), "416098002": ("allergy", "medication"), "414285001": ("allergy", "food"),
    "426232007": ("allergy", "environment"), "232347008": ("allergy", "environment"),
    "609328004": ("allergy", None), "59037007": ("intolerance", "medication"),
    "235719002": ("intolerance", "food"), "782197009": ("intolerance", None),
    "419511003": (None, "medication"), "418471000": (None, "food"), "418038007": (None, None),
    "420134006": (None, None),
}
_STATUS_VALUE = {"55561003": "active", "73425007": "inactive", "413322009": "resolved"}
_SEVERITY = {"255604002": "mild", "371923003": "moderate", "6736007": "moderate", "371924009": "severe",
             "24484000": "severe", "399166001": "severe"}
_CRITICALITY = {"CRITL": "low", "CRITH": "high", "CRITU": "unable-to-assess"}


def map_allergy_entry(entry: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map one section entry: an Allergy Concern Act, or a bare Allergy Intolerance Observation."""
    results: list[AllergyIntolerance] = []
    for act in ccda.each(entry, "hl7:act"):
        if ccda.has_template(act, OID_ALLERGY_CONCERN_ACT):
            results.extend(map_allergy_act(act, ctx))
    for obs in ccda.with_template(entry, "hl7:observation", OID_ALLERGY_OBSERVATION):
        mapped = map_allergy_observation(obs, ctx, None)
        if mapped is not None:
            results.append(mapped)
    return [Mapped(entry=a) for a in results]


def map_allergy_act(act: etree._Element, ctx: EntryContext) -> list[AllergyIntolerance]:
    """Map an Allergy Concern Act (2.16.840.1.113883.10.20.22.4.30) to one AllergyIntolerance per observation."""
    concern_status = ccda.attr(act, "hl7:statusCode", "code")
    observations = ccda.with_template(act, "hl7:entryRelationship/hl7:observation", OID_ALLERGY_OBSERVATION)
    mapped = [map_allergy_observation(obs, ctx, concern_status) for obs in observations]
    return [m for m in mapped if m is not None]


def map_allergy_observation(obs: etree._Element, ctx: EntryContext,
                            concern_status: str | None) -> AllergyIntolerance | None:
    """Map an Allergy Intolerance Observation (2.16.840.1.113883.10.20.22.4.7) to an AllergyIntolerance.

    The substance is participant[@typeCode='CSM']/.../playingEntity/code. negationInd="true" with no substance
    is "no known allergy" (SNOMED 716186003, confirmed); with a substance it is refuted (C-CDA on FHIR,
    Allergies). Type and category come from the observation value (allergy vs intolerance, drug/food/...).
    """
    negated = (obs.get("negationInd") or "").strip().lower() == "true"
    value_code = ccda.attr(obs, "hl7:value", "code")
    code = _substance(obs, ctx)
    verification = "refuted" if negated and code is not None else "confirmed"
    if code is None and negated:
        code = CodeableConcept(coding=[Coding(system=systems.SNOMED, code=NO_KNOWN_ALLERGY[0],
                                              display=NO_KNOWN_ALLERGY[1])])
    code = code or codeable_concept(ccda.first(obs, "hl7:value"), ctx.narrative)
    if code is None:
        ctx.warn(f"allergy observation ({OID_ALLERGY_OBSERVATION}) without a substance: skipped")
        return None
    kind, category = _VALUE_KIND.get(value_code or "", (None, None))
    time = ccda.first(obs, "hl7:effectiveTime")
    return AllergyIntolerance(
        id=ctx.new_id(),
        identifier=identifiers(obs) or None,
        clinicalStatus=concept(ALLERGY_CLINICAL, _clinical_status(obs, concern_status, ccda.ts(time, "hl7:high"))),
        verificationStatus=concept(ALLERGY_VERIFICATION, verification),
        type=kind,
        category=[category] if category else None,
        criticality=_CRITICALITY.get(_value_of(obs, OID_CRITICALITY_OBSERVATION) or ""),
        code=code,
        patient=ctx.subject,
        onsetDateTime=ccda.ts(time, "hl7:low") or ccda.ts(time),
        recordedDate=ccda.ts(obs, "hl7:author/hl7:time"),
        reaction=_reactions(obs, ctx) or None,
    )


def _substance(obs: etree._Element, ctx: EntryContext) -> CodeableConcept | None:
    """Return the allergen: the playingEntity code (with translations/originalText) or its name."""
    entity = ccda.first(obs, "hl7:participant/hl7:participantRole/hl7:playingEntity")
    code = codeable_concept(ccda.first(entity, "hl7:code"), ctx.narrative)
    if code is not None:
        return code
    name = ccda.text_of(ccda.first(entity, "hl7:name"))
    return CodeableConcept(text=name) if name else None


def _clinical_status(obs: etree._Element, concern_status: str | None, resolved_at: str | None) -> str:
    """Return active/inactive/resolved from the Allergy Status Observation, else from the concern act."""
    status = _STATUS_VALUE.get(_value_of(obs, OID_ALLERGY_STATUS) or "")
    if status:
        return status
    if resolved_at:
        return "resolved"
    return "inactive" if concern_status in ("completed", "aborted", "suspended") else "active"


def _reactions(obs: etree._Element, ctx: EntryContext) -> list[AllergyIntoleranceReaction]:
    """Map the Reaction Observations (4.9) with their Severity (4.8); the allergy's severity is the fallback."""
    default_severity = _SEVERITY.get(_value_of(obs, OID_SEVERITY_OBSERVATION) or "")
    reactions = []
    for reaction in ccda.with_template(obs, "hl7:entryRelationship/hl7:observation", OID_REACTION_OBSERVATION):
        manifestation = codeable_concept(ccda.first(reaction, "hl7:value"), ctx.narrative)
        if manifestation is None:
            continue
        time = ccda.first(reaction, "hl7:effectiveTime")
        reactions.append(AllergyIntoleranceReaction(
            manifestation=[manifestation],
            severity=_SEVERITY.get(_value_of(reaction, OID_SEVERITY_OBSERVATION) or "") or default_severity,
            onset=ccda.ts(time, "hl7:low") or ccda.ts(time),
        ))
    return reactions


def _value_of(el: etree._Element, template: str) -> str | None:
    """Return value/@code of the first entryRelationship observation with the template."""
    found = ccda.with_template(el, "hl7:entryRelationship/hl7:observation", template)
    return ccda.attr(found[0], "hl7:value", "code") if found else None
