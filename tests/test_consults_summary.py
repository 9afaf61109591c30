"""mappers/summary.py: concordance with links read back, the alternatives rule, and the summary section."""

import pytest
from fhir.resources.R4B.bundle import Bundle

from mappers.errors import MappingError
from mappers.narrative import check_narrative
from mappers.summary import add_summary_section, build_summary_section, summarise_consult

SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
EHR = "http://ehr.example/fhir"


def condition(code: str, *, system: str = ICD, display: str | None = None, id_: str | None = None,
              verification: str | None = None, evidence: list[dict] | None = None) -> dict:
    resource = {"resourceType": "Condition", "subject": {"reference": "urn:uuid:p"},
                "code": {"coding": [{"system": system, "code": code, "display": display or code}]}}
    if id_:
        resource["id"] = id_
    if verification:
        resource["verificationStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                                "condition-ver-status", "code": verification}]}
    if evidence:
        resource["evidence"] = [{"detail": evidence}]
    return resource


def bundle(resources: list[tuple[str, dict]], sections: list[dict] | None = None) -> Bundle:
    composition = {"resourceType": "Composition", "status": "final", "type": {"text": "note"},
                   "subject": {"reference": "urn:uuid:p"}, "date": "2026-11-20", "author": [{"display": "Dr. A"}],
                   "title": "Note", "section": sections or [{"title": "Text", "text": {
                       "status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}]}
    entries = [{"fullUrl": "urn:uuid:c", "resource": composition},
               {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p"}}]
    entries += [{"fullUrl": url, "resource": r} for url, r in resources]
    return Bundle.model_validate({"resourceType": "Bundle", "type": "document", "timestamp": "2026-11-21T00:00:00Z",
                                  "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:b"},
                                  "entry": entries})


PACKET = bundle([
    ("urn:uuid:r1", condition("E78.5", display="Hyperlipidemia", id_="r1")),
    ("urn:uuid:r2", condition("I10", display="Hypertension", id_="r2")),
    ("urn:uuid:r3", condition("N40.1", display="BPH", id_="r3")),
    ("urn:uuid:med", {"resourceType": "Medication", "code": {"coding": [{"system": RXNORM, "code": "617311"}]}}),
    ("urn:uuid:mr", {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                     "subject": {"reference": "urn:uuid:p"}, "medicationReference": {"reference": "urn:uuid:med"}}),
])


@pytest.mark.parametrize("detail", [
    {"type": "Condition", "identifier": {"system": "urn:ietf:rfc:3986", "value": f"{EHR}/Condition/r2"}},
    {"type": "Condition", "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:r2"}},
    {"reference": "urn:uuid:r2"},
    {"reference": "Condition/r2"},
], ids=["logical-ehr-url", "logical-packet-url", "literal-packet-url", "literal-type-id"])
def test_a_link_to_a_referred_condition_makes_another_code_a_revision(detail: dict) -> None:
    consult = bundle([("urn:uuid:k1", condition("I15.9", display="Secondary hypertension", evidence=[detail]))])
    concordance = summarise_consult(consult, PACKET).concordance
    assert [(r["from"]["condition"], r["to"]["code"]) for r in concordance["revised"]] == [
        ("Condition/r2", f"{ICD}|I15.9")]
    assert concordance["new"] == []


def test_without_a_link_another_category_is_new_and_the_referred_one_not_addressed() -> None:
    consult = bundle([("urn:uuid:k1", condition("I15.9")),
                      ("urn:uuid:k2", condition("E78.5", verification="refuted"))])
    concordance = summarise_consult(consult, PACKET).concordance
    assert [n["code"] for n in concordance["new"]] == [f"{ICD}|I15.9"]
    assert [r["condition"] for r in concordance["refuted"]] == ["Condition/r1"]
    assert [n["condition"] for n in concordance["not_addressed"]] == ["Condition/r2", "Condition/r3"]


def request(resource_type: str, intent: str, *, status: str = "active", code: dict | None = None) -> dict:
    resource = {"resourceType": resource_type, "status": status, "intent": intent, "subject": {"reference": "urn:uuid:p"}}
    if resource_type == "MedicationRequest":
        resource["medicationCodeableConcept"] = code or {"text": "a drug"}
    elif resource_type == "ServiceRequest":
        resource["code"] = code or {"text": "a service"}
    return resource


def test_alternatives_are_proposals_plans_or_plan_section_entries_not_already_in_the_packet() -> None:
    plan_section = {"title": "Plan", "code": {"coding": [{"system": LOINC, "code": "18776-5"}]},
                    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">p</div>'},
                    "entry": [{"reference": "urn:uuid:a4"}]}
    consult = bundle([
        ("urn:uuid:a1", request("MedicationRequest", "proposal", code={"coding": [
            {"system": RXNORM, "code": "259255", "display": "atorvastatin 80 MG Oral Tablet"}]})),
        ("urn:uuid:a2", request("MedicationRequest", "proposal", code={"coding": [{"system": RXNORM, "code": "617311"}]})),
        ("urn:uuid:a3", request("ServiceRequest", "order", code={"text": "an order, not in a plan section"})),
        ("urn:uuid:a4", request("ServiceRequest", "order", code={"text": "Surveillance MRI"})),
        ("urn:uuid:a5", request("ServiceRequest", "plan", status="completed")),
        ("urn:uuid:a6", {"resourceType": "CarePlan", "status": "draft", "intent": "option", "title": "Watchful waiting",
                         "subject": {"reference": "urn:uuid:p"}}),
        ("urn:uuid:a7", request("ServiceRequest", "plan", status="revoked")),
    ], sections=[plan_section])
    summary = summarise_consult(consult, PACKET)
    assert [(a["resource"], a["type"], a["intent"], a["display"]) for a in summary.concordance["alternatives"]] == [
        ("urn:uuid:a1", "MedicationRequest", "proposal", "atorvastatin 80 MG Oral Tablet"),
        ("urn:uuid:a4", "ServiceRequest", "order", "Surveillance MRI"),
        ("urn:uuid:a6", "CarePlan", "option", "Watchful waiting")]
    assert summary.concordance["alternatives"][0]["code"] == f"{RXNORM}|259255"
    assert summary.entries == ["urn:uuid:a1", "urn:uuid:a4", "urn:uuid:a6"]


def test_summary_section_lists_each_class_and_references_the_consult_resources() -> None:
    consult = bundle([
        ("urn:uuid:k1", condition("E78.5", display="Hyperlipidemia")),
        ("urn:uuid:k2", condition("E78.2", display="Mixed <hyper>lipidemia & more",
                                  evidence=[{"reference": "urn:uuid:r2"}])),
        ("urn:uuid:k3", condition("E55.9", display="Vitamin D deficiency")),
        ("urn:uuid:a1", request("MedicationRequest", "proposal")),
    ])
    section = build_summary_section(summarise_consult(consult, PACKET))
    assert section.title == "Second-opinion summary"
    assert section.code.coding[0].code == "55110-1"
    assert [e.reference for e in section.entry] == ["urn:uuid:k1", "urn:uuid:k2", "urn:uuid:k3", "urn:uuid:a1"]
    div = section.text.div
    assert check_narrative(div) == []
    assert "<li>Hyperlipidemia (ICD-10-CM E78.5)</li>" in div
    assert "Hypertension (ICD-10-CM I10) \u2192 Mixed &lt;hyper&gt;lipidemia &amp; more (ICD-10-CM E78.2)" in div
    assert "<h3>Refuted</h3><p>None</p>" in div
    assert "<li>BPH (ICD-10-CM N40.1)</li>" in div and "<li>a drug</li>" in div


def test_add_summary_section_puts_it_first_and_leaves_the_input_alone() -> None:
    consult = bundle([("urn:uuid:k1", condition("E78.5"))])
    before = consult.model_dump_json()
    summarised, summary = add_summary_section(consult, PACKET)
    assert consult.model_dump_json() == before
    sections = summarised.entry[0].resource.section
    assert [s.title for s in sections] == ["Second-opinion summary", "Text"]
    assert summary.concordance["confirmed"][0]["condition"] == "Condition/r1"
    assert summarise_consult(summarised, PACKET).concordance == summary.concordance  # the section adds nothing


def test_a_consult_with_no_diagnoses_leaves_every_referred_one_not_addressed() -> None:
    summarised, summary = add_summary_section(bundle([]), PACKET)
    assert [n["condition"] for n in summary.concordance["not_addressed"]] == ["Condition/r1", "Condition/r2",
                                                                              "Condition/r3"]
    section = summarised.entry[0].resource.section[0]
    assert section.entry is None and "confirmed 0" in section.text.div


def test_a_bundle_without_a_composition_first_is_refused() -> None:
    broken = Bundle.model_validate({"resourceType": "Bundle", "type": "document",
                                    "entry": [{"resource": {"resourceType": "Patient"}}]})
    with pytest.raises(MappingError):
        add_summary_section(broken, PACKET)
