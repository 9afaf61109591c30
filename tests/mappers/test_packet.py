"""The referral packet: a valid FHIR document that holds the record (minus what the clinician left out)."""

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from lxml import etree

from mappers import systems
from mappers.errors import MappingError
from mappers.ids import sequential_ids
from mappers.narrative import check_narrative
from mappers.packet import Packet, ReferralRequest, build_referral_bundle
from mappers.record import PatientRecord
from mappers.references import iter_references
from mappers.validation import check_document_bundle

SYNTHEA = sorted((Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fhir-patients").glob("*.json"))
SYNTHEA_IDS = [p.stem.split("_")[1] for p in SYNTHEA]
CLINICAL_TYPES = ("Condition", "Procedure", "DiagnosticReport", "Observation", "MedicationRequest",
                  "MedicationStatement", "AllergyIntolerance", "CarePlan", "DocumentReference")
SECTION_ORDER = ["42349-1", "11450-4", "47519-4", "30954-2", "10160-0", "48765-2", "18776-5", "77599-9", "48767-8"]
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
EHR = "https://ehr.example.org/fhir"

Load = Callable[[Path], PatientRecord]


def request(**changes: Any) -> ReferralRequest:
    """A referral request with a question and a patient's question."""
    fields: dict[str, Any] = {"referral_id": "5b1f0d6e-3f7a-4c55-9d59-2a6f3f1f0a11",
                              "question": "Is the working diagnosis right?",
                              "patient_questions": ["Do I need surgery?"], **changes}
    return ReferralRequest(**fields)


def build(record: PatientRecord, now: datetime, **changes: Any) -> Packet:
    """The packet with sequential ids."""
    return build_referral_bundle(record, request(**changes), now=now, new_id=sequential_ids())


def of_type(bundle: Bundle, resource_type: str) -> list[Resource]:
    """The bundle's resources of one type."""
    return [e.resource for e in bundle.entry if e.resource.get_resource_type() == resource_type]


def composition(packet: Packet) -> Composition:
    """The packet's Composition."""
    first = packet.bundle.entry[0].resource
    assert isinstance(first, Composition)
    return first


def resource(data: dict[str, Any]) -> Resource:
    """An R4B model from JSON-like data."""
    return get_fhir_model_class(data["resourceType"]).model_validate(data)


def small_record(*resources: dict[str, Any], patient: dict[str, Any] | None = None) -> PatientRecord:
    """A PatientRecord for Patient/p1 with the given resources."""
    patient_data = patient or {"resourceType": "Patient", "id": "p1", "name": [{"family": "Test"}]}
    return PatientRecord(patient=Patient.model_validate(patient_data), resources=[resource(r) for r in resources],
                         base_url=EHR)


def condition(cid: str, name: str = "Hypertension", **extra: Any) -> dict[str, Any]:
    """Condition JSON for Patient/p1."""
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"}, "code": {"text": name},
            **extra}


# --- every Synthea patient -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", SYNTHEA, ids=SYNTHEA_IDS)
def test_packet_is_a_valid_fhir_document(path: Path, synthea_record: Load, now: datetime) -> None:
    packet = build(synthea_record(path), now)
    assert check_document_bundle(packet.bundle) == []
    Bundle.model_validate(packet.bundle.model_dump())
    assert packet.bundle.type == "document" and packet.bundle.timestamp == now
    assert packet.bundle.identifier.system == "urn:ietf:rfc:3986"
    assert packet.dropped_references == []


@pytest.mark.parametrize("path", SYNTHEA, ids=SYNTHEA_IDS)
def test_the_compositions_json_is_its_models_dump(path: Path, synthea_record: Load, now: datetime) -> None:
    packet = build(synthea_record(path), now)
    written = packet.document["entry"][0]["resource"]
    assert written == Composition.model_validate(written).model_dump(mode="json", exclude_none=True)
    assert sum(len(s.get("entry", [])) for s in written["section"]) == sum(packet.counts.values()) > 0


@pytest.mark.parametrize("path", SYNTHEA, ids=SYNTHEA_IDS)
def test_packet_holds_every_clinical_resource_of_the_record(path: Path, synthea_record: Load, now: datetime) -> None:
    record = synthea_record(path)
    packet = build(record, now)
    for resource_type in CLINICAL_TYPES:
        expected = Counter(r.id for r in record.of_type(resource_type))
        assert Counter(r.id for r in of_type(packet.bundle, resource_type)) == expected, resource_type
    assert [p.id for p in of_type(packet.bundle, "Patient")] == [record.patient.id]


@pytest.mark.parametrize("path", SYNTHEA, ids=SYNTHEA_IDS)
def test_sections_come_in_order_and_count_their_entries(path: Path, synthea_record: Load, now: datetime) -> None:
    record = synthea_record(path)
    packet = build(record, now)
    sections = composition(packet).section
    assert [s.code.coding[0].code for s in sections] == SECTION_ORDER
    results = {r.reference for dr in record.of_type("DiagnosticReport") for r in dr.result or []}
    standalone = [o for o in record.of_type("Observation") if f"Observation/{o.id}" not in results]
    assert packet.counts == {
        "42349-1": 1,
        "11450-4": len(record.of_type("Condition")),
        "47519-4": len(record.of_type("Procedure")),
        "30954-2": len(record.of_type("DiagnosticReport")) + len(standalone),
        "10160-0": len(record.of_type("MedicationStatement")) + len(record.of_type("MedicationRequest")),
        "48765-2": len(record.of_type("AllergyIntolerance")),
        "18776-5": len(record.of_type("CarePlan")),
        "77599-9": len(record.of_type("DocumentReference")),
        "48767-8": 0,  # readiness: narrative only
    }
    for section in sections:
        assert len(section.entry or []) == packet.counts[section.code.coding[0].code]
        assert check_narrative(section.text.div) == []


@pytest.mark.parametrize("path", SYNTHEA, ids=SYNTHEA_IDS)
def test_excluded_items_are_absent_reported_and_no_longer_referenced(path: Path, synthea_record: Load,
                                                                     now: datetime) -> None:
    record = synthea_record(path)
    chosen = [r for t in ("Condition", "Procedure", "DiagnosticReport") for r in record.of_type(t)[:1]]
    exclude = [f"{r.get_resource_type()}/{r.id}" for r in chosen] + ["Condition/not-in-the-record"]
    packet = build(record, now, exclude=exclude)
    assert packet.excluded == exclude[:-1]
    left_out = {r.id for r in chosen} | {r.reference.split("/")[1] for r in getattr(chosen[-1], "result", None) or []
                                         if chosen and chosen[-1].get_resource_type() == "DiagnosticReport"}
    assert not left_out & {e.resource.id for e in packet.bundle.entry}
    references = {r.reference for e in packet.bundle.entry for r in iter_references(e.resource) if r.reference}
    assert all(ref.startswith("urn:uuid:") for ref in references)
    in_packet = {(e.resource.get_resource_type(), e.resource.id) for e in packet.bundle.entry}
    kept = [r for r in record.resources if (r.get_resource_type(), r.id) in in_packet]
    pointing = {f"{r.get_resource_type()}/{r.id}" for r in chosen} & {
        ref.reference for r in kept for ref in iter_references(r)}
    assert pointing <= set(packet.dropped_references)
    assert check_document_bundle(packet.bundle) == []


@pytest.mark.parametrize("path", SYNTHEA[:3], ids=SYNTHEA_IDS[:3])
def test_the_same_inputs_give_the_same_json(path: Path, synthea_record: Load, now: datetime) -> None:
    first, second = build(synthea_record(path), now), build(synthea_record(path), now)
    assert first.bundle.model_dump_json() == second.bundle.model_dump_json()
    assert first.service_request.model_dump_json() == second.service_request.model_dump_json()
    assert first.task.model_dump_json() == second.task.model_dump_json()


def test_a_record_without_problems_gets_empty_sections_with_an_empty_reason(synthea_record: Load,
                                                                           now: datetime) -> None:
    luigi = next(p for p in SYNTHEA if "Luigi" in p.name)
    sections = {s.code.coding[0].code: s for s in composition(build(synthea_record(luigi), now)).section}
    problems = sections["11450-4"]
    assert problems.entry is None
    assert problems.emptyReason.coding[0].system == systems.LIST_EMPTY_REASON
    assert problems.emptyReason.coding[0].code == "nilknown"
    assert "None recorded" in problems.text.div


def test_the_packet_serialises_as_fhir_xml(synthea_record: Load, now: datetime) -> None:
    edward = next(p for p in SYNTHEA if "Edward" in p.name)
    xml = etree.fromstring(build(synthea_record(edward), now).bundle.model_dump_xml())
    assert etree.QName(xml).localname == "Bundle"


# --- the document's shape ------------------------------------------------------------------------------


def test_composition_is_a_final_referral_note_by_the_requester(now: datetime) -> None:
    packet = build(small_record(condition("c1")), now, requester_display="Dr Ada Lovelace")
    doc = composition(packet)
    assert (doc.status, doc.title, doc.date) == ("final", "Second-opinion referral", now)
    assert doc.type.coding[0].model_dump(exclude_none=True) == {
        "system": "http://loinc.org", "code": "57133-1", "display": "Referral note"}
    assert [a.model_dump(exclude_none=True) for a in doc.author] == [{"display": "Dr Ada Lovelace"}]
    assert doc.subject.reference == packet.bundle.entry[1].fullUrl
    assert packet.bundle.entry[1].resource.id == "p1"


def test_author_defaults_to_the_service(now: datetime) -> None:
    assert composition(build(small_record(), now)).author[0].display == "Second-opinion referral service"


def test_reason_section_holds_the_questions_and_the_order(now: datetime) -> None:
    packet = build(small_record(condition("c1")), now, question="Is it <really> lupus?")
    reason = composition(packet).section[0]
    assert "Is it &lt;really&gt; lupus?" in reason.text.div and "Do I need surgery?" in reason.text.div
    [order] = of_type(packet.bundle, "ServiceRequest")
    assert reason.entry[0].reference == next(e.fullUrl for e in packet.bundle.entry if e.resource is order)
    patient_url, condition_url = packet.bundle.entry[1].fullUrl, packet.bundle.entry[3].fullUrl
    assert order.subject.reference == patient_url
    assert [r.reference for r in order.reasonReference] == [condition_url]


def test_packet_service_request_and_task_point_at_the_ehr(now: datetime) -> None:
    packet = build(small_record(condition("c1")), now, consultant_display="Dr Second")
    assert packet.service_request.subject.reference == "Patient/p1"
    assert [r.reference for r in packet.service_request.reasonReference] == ["Condition/c1"]
    assert packet.service_request.supportingInfo[0].identifier == packet.bundle.identifier
    assert packet.task.status == "draft" and packet.task.for_fhir.reference == "Patient/p1"
    assert packet.task.owner.display == "Dr Second"


def test_a_script_in_a_condition_is_escaped_in_the_packet(now: datetime) -> None:
    packet = build(small_record(condition("c1", "<script>alert(1)</script>")), now)
    problems = composition(packet).section[1]
    assert "<script" not in problems.text.div and "&lt;script&gt;" in problems.text.div
    assert check_document_bundle(packet.bundle) == []


def test_an_unsafe_ehr_narrative_is_dropped(now: datetime) -> None:
    text = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script>a</div>'}
    packet = build(small_record(condition("c1", **{"text": text})), now)
    assert of_type(packet.bundle, "Condition")[0].text is None


def test_medications_keep_both_resources_but_list_the_drug_once(now: datetime) -> None:
    drug = {"coding": [{"system": RXNORM, "code": "860975"}], "text": "Metformin 500 MG"}
    statement = {"resourceType": "MedicationStatement", "id": "ms1", "status": "active",
                 "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": drug}
    order = {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": drug,
             "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}],
                                    "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}]}
    packet = build(small_record(statement, order), now)
    medications = composition(packet).section[4]
    assert len(medications.entry) == 2 and packet.counts["10160-0"] == 2
    assert medications.text.div.count("Metformin 500 MG") == 1
    assert "Also ordered (active): 2 tablets twice daily" in medications.text.div


def test_referenced_medications_practitioners_and_encounters_come_along(now: datetime) -> None:
    record = small_record(
        {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": f"{EHR}/Medication/m1"},
         "requester": {"reference": "Practitioner/dr1"}, "encounter": {"reference": "Encounter/e1"}},
        {"resourceType": "Medication", "id": "m1", "code": {"text": "Warfarin 5 MG"}},
        {"resourceType": "Practitioner", "id": "dr1"},
        {"resourceType": "Practitioner", "id": "unreferenced"},
        {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
         "serviceProvider": {"reference": "Organization/o1"}},
        {"resourceType": "Organization", "id": "o1", "name": "Clinic"},
        {"resourceType": "Immunization", "id": "i1", "status": "completed", "vaccineCode": {"text": "flu"},
         "patient": {"reference": "Patient/p1"}, "occurrenceDateTime": "2020-01-01"},
    )
    packet = build(record, now)
    ids = {f"{e.resource.get_resource_type()}/{e.resource.id}" for e in packet.bundle.entry}
    assert {"Medication/m1", "Practitioner/dr1", "Encounter/e1", "Organization/o1"} <= ids
    assert not {"Practitioner/unreferenced", "Immunization/i1"} & ids
    assert "Warfarin 5 MG" in composition(packet).section[4].text.div
    assert check_document_bundle(packet.bundle) == []


def test_a_reference_to_something_not_in_the_record_becomes_display_only(now: datetime) -> None:
    packet = build(small_record(condition("c1", asserter={"reference": "Practitioner/gone"},
                                          encounter={"reference": "Encounter/e9", "display": "Visit"})), now)
    assert sorted(packet.dropped_references) == ["Encounter/e9", "Practitioner/gone"]
    [copy] = of_type(packet.bundle, "Condition")
    assert copy.asserter.model_dump(exclude_none=True) == {"display": "Practitioner (not included)"}
    assert copy.encounter.model_dump(exclude_none=True) == {"display": "Visit"}


def test_a_reference_to_an_excluded_item_loses_its_display_too(now: datetime) -> None:
    plan = {"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
            "subject": {"reference": "Patient/p1"}, "addresses": [{"reference": "Condition/c2", "display": "HIV"}]}
    packet = build(small_record(condition("c1"), condition("c2", "HIV"), plan), now, exclude=["Condition/c2"])
    [copy] = of_type(packet.bundle, "CarePlan")
    assert copy.addresses[0].model_dump(exclude_none=True) == {"display": "Condition (not included)"}
    assert "HIV" not in packet.bundle.model_dump_json()
    assert packet.excluded == ["Condition/c2"] and packet.dropped_references == ["Condition/c2"]


def test_excluding_a_report_leaves_out_its_results(now: datetime) -> None:
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "HIV viral load"},
                   "subject": {"reference": "Patient/p1"}}
    report = {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final", "code": {"text": "HIV panel"},
              "subject": {"reference": "Patient/p1"}, "result": [{"reference": "Observation/o1"}]}
    packet = build(small_record(observation, report), now, exclude=[f"{EHR}/DiagnosticReport/dr1"])
    assert of_type(packet.bundle, "Observation") == [] and of_type(packet.bundle, "DiagnosticReport") == []
    assert packet.excluded == ["DiagnosticReport/dr1"]
    assert packet.counts["30954-2"] == 0


def test_the_patient_cannot_be_excluded(now: datetime) -> None:
    with pytest.raises(MappingError, match="Patient cannot be left out"):
        build(small_record(), now, exclude=["Patient/p1"])


def test_a_resource_without_an_id_gets_its_fullurl_uuid(now: datetime) -> None:
    record = small_record(condition("c1"))
    record.resources.append(resource({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                                      "code": {"text": "No id"}}))
    packet = build(record, now)
    entry = next(e for e in packet.bundle.entry if getattr(e.resource, "code", None) and
                 e.resource.get_resource_type() == "Condition" and e.resource.code.text == "No id")
    assert entry.fullUrl == f"urn:uuid:{entry.resource.id}"
    assert packet.counts["11450-4"] == 2


def test_full_urls_are_unique_urn_uuids_and_ehr_ids_are_kept(now: datetime) -> None:
    packet = build(small_record(condition("c1"), condition("c2")), now)
    urls = [e.fullUrl for e in packet.bundle.entry]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)
    assert [c.id for c in of_type(packet.bundle, "Condition")] == ["c1", "c2"]


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_referral_bundle(small_record(), request(), now=datetime(2024, 6, 1), new_id=sequential_ids())


# --- the EHR's JSON travels as sent ----------------------------------------------------------------------


def sourced(record: PatientRecord) -> dict[int, dict]:
    """The EHR's JSON of a record's resources (as the fetch hands it over), by id() of their model."""
    from mappers import fhirjson

    models = [record.patient, *record.resources]
    return {id(m): fhirjson.loads(m.model_dump_json(exclude_none=True)) for m in models}


def test_the_ehrs_json_travels_unchanged_but_for_its_references(now: datetime) -> None:
    from mappers import fhirjson
    from mappers.validation import check_document_json

    text = ('{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"Potassium"},'
            '"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-05-01T10:00:00.1234+02:00",'
            '"performer":[{"reference":"Practitioner/gone"}],"valueQuantity":{"value":100.00,"unit":"mg"},'
            '"referenceRange":[{"low":{"value":3.50},"high":{"value":1e1}}]}')
    data = fhirjson.loads(text)
    record = small_record()
    model = resource(data)
    record.resources.append(model)
    sources = sourced(record) | {id(model): data}
    packet = build_referral_bundle(record, request(), now=now, new_id=sequential_ids(), sources=sources)
    [entry] = [e for e in packet.document["entry"] if e["resource"]["resourceType"] == "Observation"]
    patient_url = packet.document["entry"][1]["fullUrl"]
    expected = text.replace('"Patient/p1"', f'"{patient_url}"').replace(
        '{"reference":"Practitioner/gone"}', '{"display":"Practitioner (not included)"}')
    assert fhirjson.dumps(entry["resource"]) == expected
    assert expected in packet.json
    assert data == fhirjson.loads(text)  # the record's JSON is left as it was
    assert check_document_json(packet.document) == []
    assert check_document_bundle(packet.bundle) == []


@pytest.mark.parametrize("path", SYNTHEA[:3], ids=SYNTHEA_IDS[:3])
def test_the_packet_reads_the_same_from_the_ehrs_json_as_from_models(path: Path, synthea_record: Load,
                                                                     now: datetime) -> None:
    record = synthea_record(path)
    exclude = [f"Condition/{c.id}" for c in record.of_type("Condition")[:2]]
    from_json = build_referral_bundle(record, request(exclude=exclude), now=now, new_id=sequential_ids(),
                                      sources=sourced(record))
    from_models = build(record, now, exclude=exclude)
    assert from_json.document["entry"][0] == from_models.document["entry"][0]  # the Composition and narratives
    assert [e["fullUrl"] for e in from_json.document["entry"]] == [e["fullUrl"] for e in from_models.document["entry"]]
    assert from_json.dropped_references == from_models.dropped_references


@pytest.mark.parametrize("path", SYNTHEA[:3], ids=SYNTHEA_IDS[:3])
def test_section_narratives_are_those_of_the_rewritten_resources(path: Path, synthea_record: Load,
                                                                 now: datetime) -> None:
    """The narratives read the EHR's resources through a DocumentView; they are what rewritten copies give."""
    from mappers.narrative import section_narrative
    from mappers.references import rewrite_references

    record = synthea_record(path)
    exclude = [f"Condition/{c.id}" for c in record.of_type("Condition")[:2]]
    packet = build(record, now, exclude=exclude)
    urls = {f"{e.resource.get_resource_type()}/{e.resource.id}": e.fullUrl for e in packet.bundle.entry[1:]}
    originals = {f"{r.get_resource_type()}/{r.id}": r for r in [record.patient, *record.resources]}
    by_url = {url: rewrite_references(originals[key], urls, base_url=record.base_url, redact=frozenset(exclude))[0]
              for key, url in urls.items() if key in originals}
    for section in composition(packet).section[1:-1]:
        copies = [by_url[ref.reference] for ref in section.entry or []]
        assert section.text.div == section_narrative(section.title, copies, resolve=by_url.get).div, section.title
