"""Fixtures for the C-CDA mapper tests: the corpus, a small inline C-CDA builder, and a fixed-clock mapper."""

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from xml.sax.saxutils import escape, quoteattr

import pytest
from fhir.resources.R4B.resource import Resource

from mappers.ccda.document import CcdaMapping, map_ccda_consult
from mappers.ccda.parser import parse_ccda
from mappers.consult_context import ConsultContext
from mappers.ids import sequential_ids

ROOT = Path(__file__).resolve().parents[2]
CORPUS_DIR = ROOT.parent / "shared" / "corpus" / "ccda"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
FIXED_NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)

PROBLEMS = "2.16.840.1.113883.10.20.22.2.5.1"
MEDICATIONS = "2.16.840.1.113883.10.20.22.2.1.1"
ALLERGIES = "2.16.840.1.113883.10.20.22.2.6.1"
RESULTS = "2.16.840.1.113883.10.20.22.2.3.1"
PROCEDURES = "2.16.840.1.113883.10.20.22.2.7.1"
PLAN = "2.16.840.1.113883.10.20.22.2.10"
SNOMED_OID = "2.16.840.1.113883.6.96"


def pytest_addoption(parser: pytest.Parser) -> None:
    """--update-golden rewrites tests/ccda/golden/*.fhir.json (UPDATE_GOLDEN=1 does the same)."""
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the C-CDA golden files instead of comparing with them")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when golden files should be rewritten (option, when registered, or UPDATE_GOLDEN=1)."""
    return bool(getattr(request.config.option, "update_golden", False)) or os.environ.get("UPDATE_GOLDEN") == "1"


def map_bytes(data: bytes, context: ConsultContext | None = None, **parse_options: object) -> CcdaMapping:
    """Parse and map C-CDA bytes with the fixed clock and sequential ids."""
    return map_ccda_consult(parse_ccda(data, **parse_options), context, now=FIXED_NOW, new_id=sequential_ids())


@pytest.fixture
def mapper() -> Callable[..., CcdaMapping]:
    """The fixed-clock parse-and-map function."""
    return map_bytes


def resources_of(mapping: CcdaMapping, resource_type: str | None = None) -> list[Resource]:
    """The Bundle's resources (of one type)."""
    found = [e.resource for e in mapping.bundle.entry or []]
    return [r for r in found if resource_type is None or r.get_resource_type() == resource_type]


@pytest.fixture
def resources() -> Callable[..., list[Resource]]:
    """resources(mapping, "Condition") → the Conditions of a mapping."""
    return resources_of


# --- the inline C-CDA builder ---

def document(sections: list[str] | None = None, *, birth: str = "19750501", gender: str = "F",
             effective: str = "20240531143000-0500", code: str = "11488-4", title: str = "Consult note",
             templates: tuple[str, ...] = ("2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.4"),
             patient_ids: str = '<id root="2.16.840.1.113883.19.5" extension="MRN-1"/>', header: str = "",
             body: str | None = None) -> bytes:
    """A minimal C-CDA document around the given sections (or a custom body)."""
    template_xml = "".join(f'<templateId root="{t}"/>' for t in templates)
    gender_xml = f'<administrativeGenderCode code="{gender}" codeSystem="2.16.840.1.113883.5.1"/>' if gender else ""
    birth_xml = f'<birthTime value="{birth}"/>' if birth else ""
    if body is None:
        body = "<component><structuredBody>" + "".join(
            f"<component>{s}</component>" for s in sections or []) + "</structuredBody></component>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="US"/><typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>{template_xml}
  <id root="2.16.840.1.113883.19.5.99999.1" extension="DOC-1"/>
  <code code="{code}" codeSystem="2.16.840.1.113883.6.1" displayName="Consult note"/>
  <title>{escape(title)}</title><effectiveTime value="{effective}"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/><languageCode code="en-US"/>
  <recordTarget><patientRole>{patient_ids}
    <patient><name><given>Test</given><family>Patient</family></name>{gender_xml}{birth_xml}</patient>
  </patientRole></recordTarget>
  <author><time value="20240601"/><assignedAuthor><id root="2.16.840.1.113883.4.6" extension="1234567893"/>
    <assignedPerson><name><given>Sara</given><family>Specialist</family></name></assignedPerson>
  </assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="2.16.840.1.113883.4.6" extension="999"/>
    <name>Consult Clinic</name></representedCustodianOrganization></assignedCustodian></custodian>
  {header}{body}
</ClinicalDocument>""".encode()


def section(template: str, code: str, title: str, entries: list[str] | None = None, *,
            text: str = "<paragraph>See entries.</paragraph>", null: str | None = None) -> str:
    """A section with a LOINC code, a narrative and entries."""
    null_attr = f" nullFlavor={quoteattr(null)}" if null else ""
    text_xml = f"<text>{text}</text>" if text is not None else ""
    return (f'<section{null_attr}><templateId root="{template}"/>'
            f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1"/><title>{escape(title)}</title>{text_xml}'
            + "".join(f"<entry>{e}</entry>" for e in entries or []) + "</section>")


def problem_entry(*, act_status: str = "active", low: str | None = "20240101", high: str | None = None,
                  negated: bool = False, value: str = f'<value xsi:type="CD" code="44054006" codeSystem="{SNOMED_OID}" '
                                                      'displayName="Diabetes mellitus type 2"/>',
                  status_value: str | None = None) -> str:
    """A Problem Concern Act with one Problem Observation."""
    low_xml = f'<low value="{low}"/>' if low else '<low nullFlavor="UNK"/>'
    high_xml = f'<high value="{high}"/>' if high else ""
    negation = ' negationInd="true"' if negated else ""
    status_xml = (f'<entryRelationship typeCode="REFR"><observation classCode="OBS" moodCode="EVN">'
                  f'<templateId root="2.16.840.1.113883.10.20.22.4.6"/><code code="33999-4" codeSystem="2.16.840.1.113883.6.1"/>'
                  f'<statusCode code="completed"/><value xsi:type="CD" code="{status_value}" codeSystem="{SNOMED_OID}"/>'
                  f'</observation></entryRelationship>') if status_value else ""
    return (f'<act classCode="ACT" moodCode="EVN"><templateId root="2.16.840.1.113883.10.20.22.4.3"/>'
            f'<id root="ec8a6ff8-ed4b-4f7e-82c3-e98e58b45de7"/><code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
            f'<statusCode code="{act_status}"/><effectiveTime><low value="20240101"/></effectiveTime>'
            f'<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN"{negation}>'
            f'<templateId root="2.16.840.1.113883.10.20.22.4.4"/><id root="ab1791b0-5c71-11db-b0de-0800200c9a66"/>'
            f'<code code="55607006" codeSystem="{SNOMED_OID}"/><statusCode code="completed"/>'
            f'<effectiveTime>{low_xml}{high_xml}</effectiveTime>{value}{status_xml}</observation></entryRelationship></act>')


def problem_doc(**kwargs: object) -> bytes:
    """A consult note with one Problems section holding one problem_entry(**kwargs)."""
    return document([section(PROBLEMS, "11450-4", "Problems", [problem_entry(**kwargs)])])


def medication_entry(*, timing: str = '<effectiveTime xsi:type="PIVL_TS" institutionSpecified="true" operator="A">'
                                      '<period value="12" unit="h"/></effectiveTime>',
                     dose: str = '<doseQuantity value="1"/>', status: str = "active", mood: str = "EVN",
                     rxnorm: str = "197380", extra: str = "") -> str:
    """A Medication Activity with an IVL_TS period, a frequency, route, dose and an RxNorm drug."""
    return (f'<substanceAdministration classCode="SBADM" moodCode="{mood}">'
            f'<templateId root="2.16.840.1.113883.10.20.22.4.16"/><id root="cdbd33f0-6cde-11db-9fe1-0800200c9a66"/>'
            f'<statusCode code="{status}"/><effectiveTime xsi:type="IVL_TS"><low value="20240103"/></effectiveTime>'
            f'{timing}<routeCode code="C38288" codeSystem="2.16.840.1.113883.3.26.1.1" displayName="Oral"/>{dose}'
            f'<consumable><manufacturedProduct><templateId root="2.16.840.1.113883.10.20.22.4.23"/>'
            f'<manufacturedMaterial><code code="{rxnorm}" codeSystem="2.16.840.1.113883.6.88" '
            f'displayName="atenolol 25 MG Oral Tablet"/></manufacturedMaterial></manufacturedProduct></consumable>'
            f'{extra}</substanceAdministration>')


def medication_doc(**kwargs: object) -> bytes:
    """A consult note with one Medications section holding one medication_entry(**kwargs)."""
    return document([section(MEDICATIONS, "10160-0", "Medications", [medication_entry(**kwargs)])])


def result_entry(value: str, *, code: str = "718-7", extra: str = "") -> str:
    """A Result Organizer with one Result Observation whose value is the given XML."""
    return (f'<organizer classCode="BATTERY" moodCode="EVN"><templateId root="2.16.840.1.113883.10.20.22.4.1"/>'
            f'<id root="7d5a02b0-67a4-11db-bd13-0800200c9a66"/>'
            f'<code code="57021-8" codeSystem="2.16.840.1.113883.6.1" displayName="CBC panel"/>'
            f'<statusCode code="completed"/><effectiveTime value="20240601083000-0500"/>'
            f'<component><observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.10.20.22.4.2"/>'
            f'<id root="107c2dc0-67a5-11db-bd13-0800200c9a66"/>'
            f'<code code="{code}" codeSystem="2.16.840.1.113883.6.1" displayName="Hemoglobin"/>'
            f'<statusCode code="completed"/><effectiveTime value="20240601083000-0500"/>{value}{extra}'
            f'</observation></component></organizer>')


def result_doc(value: str, **kwargs: object) -> bytes:
    """A consult note with one Results section holding one result_entry(value)."""
    return document([section(RESULTS, "30954-2", "Results", [result_entry(value, **kwargs)])])


def allergy_entry(*, negated: bool = False, substance: str = '<code code="70618" codeSystem="2.16.840.1.113883.6.88" '
                                                            'displayName="Penicillin"/>',
                  value_code: str = "419511003") -> str:
    """An Allergy Concern Act with one Allergy Observation (and a reaction with a severity)."""
    negation = ' negationInd="true"' if negated else ""
    return (f'<act classCode="ACT" moodCode="EVN"><templateId root="2.16.840.1.113883.10.20.22.4.30"/>'
            f'<id root="36e3e930-7b14-11db-9fe1-0800200c9a66"/><code code="CONC" codeSystem="2.16.840.1.113883.5.6"/>'
            f'<statusCode code="active"/><effectiveTime><low value="20200501"/></effectiveTime>'
            f'<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN"{negation}>'
            f'<templateId root="2.16.840.1.113883.10.20.22.4.7"/><id root="4adc1020-7b14-11db-9fe1-0800200c9a66"/>'
            f'<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/><statusCode code="completed"/>'
            f'<effectiveTime><low value="19980501"/></effectiveTime>'
            f'<value xsi:type="CD" code="{value_code}" codeSystem="{SNOMED_OID}"/>'
            f'<participant typeCode="CSM"><participantRole classCode="MANU"><playingEntity classCode="MMAT">'
            f'{substance}</playingEntity></participantRole></participant>'
            f'<entryRelationship typeCode="MFST" inversionInd="true"><observation classCode="OBS" moodCode="EVN">'
            f'<templateId root="2.16.840.1.113883.10.20.22.4.9"/><code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
            f'<statusCode code="completed"/><value xsi:type="CD" code="247472004" codeSystem="{SNOMED_OID}" displayName="Hives"/>'
            f'<entryRelationship typeCode="SUBJ" inversionInd="true"><observation classCode="OBS" moodCode="EVN">'
            f'<templateId root="2.16.840.1.113883.10.20.22.4.8"/><code code="SEV" codeSystem="2.16.840.1.113883.5.4"/>'
            f'<statusCode code="completed"/><value xsi:type="CD" code="6736007" codeSystem="{SNOMED_OID}"/>'
            f'</observation></entryRelationship></observation></entryRelationship></observation></entryRelationship></act>')


def allergy_doc(**kwargs: object) -> bytes:
    """A consult note with one Allergies section holding one allergy_entry(**kwargs)."""
    return document([section(ALLERGIES, "48765-2", "Allergies", [allergy_entry(**kwargs)])])


def narrative_doc(text: str) -> bytes:
    """A consult note with one Assessment section whose <text> is the given narrative markup."""
    return document([section("2.16.840.1.113883.10.20.22.2.8", "51848-0", "Assessment", text=text)])


@pytest.fixture
def build() -> SimpleNamespace:
    """The inline C-CDA builder: build.document(...), build.problem_doc(...), build.section(...), ..."""
    return SimpleNamespace(
        document=document, section=section, problem_entry=problem_entry, problem_doc=problem_doc,
        medication_entry=medication_entry, medication_doc=medication_doc, result_entry=result_entry,
        result_doc=result_doc, allergy_entry=allergy_entry, allergy_doc=allergy_doc, narrative_doc=narrative_doc,
        PROBLEMS=PROBLEMS, MEDICATIONS=MEDICATIONS, ALLERGIES=ALLERGIES, RESULTS=RESULTS, PROCEDURES=PROCEDURES,
        PLAN=PLAN,
    )
