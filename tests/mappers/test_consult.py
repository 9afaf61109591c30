"""The consultant's answer becomes our consult document: a valid 11488-4 document about the EHR's patient."""

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient

from mappers import systems
from mappers.consult import build_consult_bundle
from mappers.consult_context import ConsultContext
from mappers.errors import MappingError
from mappers.ids import sequential_ids
from mappers.references import iter_references
from mappers.validation import check_document_bundle

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fhir-examples"
DATA = Path(__file__).resolve().parent / "data"
REDOX = EXAMPLES / "ccda-on-fhir" / "vendor-Redox_Myra_Jones_v2_document_bundle.json"
DISCHARGE = EXAMPLES / "core-r4" / "document-example-dischargesummary.json"
BARE = DATA / "consult-composition-contained.json"


def redox_json() -> dict[str, Any]:
    """Redox's document Bundle for Myra Jones, with its one invalid element repaired.

    Its DocumentReference has context.period.low (a C-CDA name; FHIR Period has start/end), which R4 and R4B
    both refuse; everything else is kept as published.
    """
    data = json.loads(REDOX.read_text(encoding="utf-8"))
    for entry in data["entry"]:
        period = entry["resource"].get("context", {}).get("period", {})
        if "low" in period:
            period["start"] = period.pop("low")
    return data


def bare_json() -> dict[str, Any]:
    """The bare Composition with contained resources."""
    return json.loads(BARE.read_text(encoding="utf-8"))


def build(source: Bundle | Composition, context: ConsultContext, now: datetime) -> Bundle:
    """Our consult document with sequential ids."""
    return build_consult_bundle(source, context, now=now, new_id=sequential_ids())


def as_collection(document: dict[str, Any]) -> Bundle:
    """The same resources as a collection Bundle with the Composition in the middle."""
    data = copy.deepcopy(document)
    data["type"] = "collection"
    entries = data["entry"]
    entries.insert(len(entries) // 2, entries.pop(0))
    return Bundle.model_validate(data)


def composition(bundle: Bundle) -> Composition:
    """The first entry's Composition."""
    first = bundle.entry[0].resource
    assert isinstance(first, Composition)
    return first


def sources() -> list[tuple[str, Any]]:
    """The three input forms."""
    return [("document", lambda: Bundle.model_validate(redox_json())),
            ("collection", lambda: as_collection(redox_json())),
            ("bare-composition", lambda: Composition.model_validate(bare_json()))]


@pytest.mark.parametrize("make_source", [s[1] for s in sources()], ids=[s[0] for s in sources()])
def test_every_input_form_makes_a_valid_consult_note_about_our_patient(
        make_source: Any, consult_context: ConsultContext, now: datetime) -> None:
    consult = build(make_source(), consult_context, now)
    assert check_document_bundle(consult) == []
    Bundle.model_validate(consult.model_dump())
    doc = composition(consult)
    assert doc.type.coding[0].model_dump(exclude_none=True) == {
        "system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
    patients = [e for e in consult.entry if isinstance(e.resource, Patient)]
    assert [p.resource.id for p in patients] == ["ehr-patient-1"]
    assert doc.subject.reference == patients[0].fullUrl
    assert (consult.type, consult.timestamp, consult.identifier.system) == ("document", now, "urn:ietf:rfc:3986")
    assert all(e.fullUrl.startswith("urn:uuid:") for e in consult.entry)


@pytest.mark.parametrize("make_source", [s[1] for s in sources()], ids=[s[0] for s in sources()])
def test_the_consult_is_linked_to_the_order_by_identifier_only(
        make_source: Any, consult_context: ConsultContext, now: datetime) -> None:
    [order] = [e for e in composition(build(make_source(), consult_context, now)).extension
               if e.url == systems.EXT_CCDA_ORDER]
    assert order.valueReference.reference is None
    assert order.valueReference.type == "ServiceRequest"
    assert order.valueReference.identifier == consult_context.service_request_identifier


def test_the_document_keeps_the_consultants_content(consult_context: ConsultContext, now: datetime) -> None:
    source = Bundle.model_validate(redox_json())
    consult = build(source, consult_context, now)
    before, after = composition(source), composition(consult)
    assert (after.title, after.date, after.status) == (before.title, before.date, "final")
    assert [s.title for s in after.section] == [s.title for s in before.section]
    assert [s.text.div for s in after.section] == [s.text.div for s in before.section]
    assert len(after.author) == 2
    urls = {e.fullUrl for e in consult.entry}
    assert all(a.reference in urls for a in after.author)
    assert len(consult.entry) == len(source.entry)  # their Patient is replaced by ours


def test_resources_about_their_patient_now_point_at_ours(consult_context: ConsultContext, now: datetime) -> None:
    consult = build(Bundle.model_validate(redox_json()), consult_context, now)
    patient_url = consult.entry[1].fullUrl
    conditions = [e.resource for e in consult.entry if e.resource.get_resource_type() == "Condition"]
    assert conditions and all(c.subject.reference == patient_url for c in conditions)


def test_a_bare_composition_loses_its_contained_resources_to_entries(consult_context: ConsultContext,
                                                                    now: datetime) -> None:
    consult = build(Composition.model_validate(bare_json()), consult_context, now)
    doc = composition(consult)
    assert doc.contained is None
    by_url = {e.fullUrl: e.resource for e in consult.entry}
    assert [by_url[e.reference].get_resource_type() for e in doc.section[0].entry] == ["Condition", "Observation"]
    condition = by_url[doc.section[0].entry[0].reference]
    assert condition.subject.reference == consult.entry[1].fullUrl
    assert by_url[condition.evidence[0].detail[0].reference].get_resource_type() == "Observation"
    assert by_url[doc.author[0].reference].get_resource_type() == "Practitioner"
    assert doc.title == "Rheumatology second opinion" and doc.type.coding[0].code == "11488-4"


def test_a_document_with_restful_full_urls_and_relative_references_resolves(now: datetime) -> None:
    eve = ConsultContext(referral_id="r", patient=Patient.model_validate(
        {"resourceType": "Patient", "id": "eve", "birthDate": "1955-01-06"}),
        service_request_identifier=Identifier(system="urn:ietf:rfc:3986", value="urn:uuid:5b1f0d6e"))
    consult = build(Bundle.model_validate_json(DISCHARGE.read_text(encoding="utf-8")), eve, now)
    assert check_document_bundle(consult) == []
    assert composition(consult).type.coding[0].code == "11488-4"  # was 18842-5 Discharge summary
    request = next(e.resource for e in consult.entry if e.resource.get_resource_type() == "MedicationRequest")
    assert request.requester.reference in {e.fullUrl for e in consult.entry}  # "Practitioner/example"


def test_the_same_inputs_give_the_same_json(consult_context: ConsultContext, now: datetime) -> None:
    first = build(Bundle.model_validate(redox_json()), consult_context, now)
    second = build(Bundle.model_validate(redox_json()), consult_context, now)
    assert first.model_dump_json() == second.model_dump_json()


def test_a_preliminary_consult_stays_preliminary(consult_context: ConsultContext, now: datetime) -> None:
    data = bare_json() | {"status": "preliminary"}
    assert composition(build(Composition.model_validate(data), consult_context, now)).status == "preliminary"


def test_an_earlier_order_extension_is_replaced(consult_context: ConsultContext, now: datetime) -> None:
    data = bare_json() | {"extension": [{"url": systems.EXT_CCDA_ORDER,
                                         "valueReference": {"reference": "ServiceRequest/theirs"}}]}
    extensions = composition(build(Composition.model_validate(data), consult_context, now)).extension
    assert len(extensions) == 1 and extensions[0].valueReference.reference is None


def test_patient_references_under_another_id_are_repointed(consult_context: ConsultContext, now: datetime) -> None:
    data = bare_json()
    data["contained"][3]["subject"] = {"reference": "Patient/their-own-id"}
    consult = build(Composition.model_validate(data), consult_context, now)
    observation = next(e.resource for e in consult.entry if e.resource.get_resource_type() == "Observation")
    assert observation.subject.reference == consult.entry[1].fullUrl


def test_our_patients_own_references_become_display_only(consult_context: ConsultContext, now: datetime) -> None:
    consult = build(Composition.model_validate(bare_json()), consult_context, now)
    patient = consult.entry[1].resource
    assert patient.managingOrganization.reference is None
    assert all(r.reference is None or r.reference.startswith("urn:uuid:")
               for e in consult.entry for r in iter_references(e.resource))


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patient_change", "message"),
    [({"identifier": [{"system": "http://hospital.example.org/mrn", "value": "MRN-9999"}]},
      "the consult is about a different patient: Patient.identifier differs"),
     ({"birthDate": "1950-02-03"}, "the consult is about a different patient: Patient.birthDate differs")],
    ids=["identifier", "birth-date"],
)
def test_a_consult_about_a_different_patient_is_refused(consult_context: ConsultContext, now: datetime,
                                                        patient_change: dict, message: str) -> None:
    data = bare_json()
    data["contained"][0] |= patient_change
    with pytest.raises(MappingError) as caught:
        build(Composition.model_validate(data), consult_context, now)
    assert str(caught.value) == message
    assert "MRN" not in str(caught.value) and "1950" not in str(caught.value)


def test_a_patient_identifier_of_another_system_is_no_contradiction(consult_context: ConsultContext,
                                                                     now: datetime) -> None:
    data = bare_json()
    data["contained"][0]["identifier"] = [{"system": "http://consultant.example.org/ids", "value": "77"}]
    assert check_document_bundle(build(Composition.model_validate(data), consult_context, now)) == []


def test_a_composition_without_an_author_is_refused(consult_context: ConsultContext, now: datetime) -> None:
    data = bare_json()
    data["author"] = [{"display": "x"}]
    composition_model = Composition.model_validate(data)
    composition_model.author = []
    with pytest.raises(MappingError, match="Composition.author is missing"):
        build(composition_model, consult_context, now)


def test_a_section_entry_that_is_not_in_the_bundle_is_refused(consult_context: ConsultContext,
                                                              now: datetime) -> None:
    data = redox_json()
    dead = "urn:uuid:0d7e0f51-0000-4000-8000-00000000dead"
    data["entry"][0]["resource"]["section"][2]["entry"][0]["reference"] = dead
    with pytest.raises(MappingError) as caught:
        build(Bundle.model_validate(data), consult_context, now)
    assert str(caught.value) == ("Composition.section[2].entry[0] refers to "
                                 "urn:uuid:0d7e0f51-0000-4000-8000-00000000dead which is not in the Bundle")


def test_the_r4_core_composition_example_is_refused_for_its_dangling_entries(
        consult_context: ConsultContext, now: datetime) -> None:
    source = Composition.model_validate_json((EXAMPLES / "core-r4" / "composition-example.json").read_text())
    with pytest.raises(MappingError, match=r"Composition.section\[0\].entry\[0\] refers to Condition/stroke "
                                           "which is not contained in the Composition"):
        build(source, consult_context, now)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"section": None, "text": None}, "the Composition has no sections and no text"),
     ({"status": "entered-in-error"}, "Composition.status is entered-in-error"),
     ({"date": "2030-01-01T00:00:00Z"}, "Composition.date is later than the time the consult was received"),
     ({"section": [{"title": "Empty", "code": {"text": "x"}}]}, r"Composition.section\[0\] has no text, entries"),
     ({"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Fine</p>'
                                              '<script>steal()</script></div>'}},
      r"Composition.text is not allowed narrative: element <script> is not allowed")],
    ids=["no-content", "entered-in-error", "future-date", "empty-section", "script-in-narrative"],
)
def test_a_composition_that_cannot_be_a_consult_is_refused(consult_context: ConsultContext, now: datetime,
                                                           change: dict, message: str) -> None:
    data = {k: v for k, v in (bare_json() | change).items() if v is not None}
    with pytest.raises(MappingError, match=message):
        build(Composition.model_validate(data), consult_context, now)


def test_a_document_whose_first_entry_is_not_a_composition_is_refused(consult_context: ConsultContext,
                                                                       now: datetime) -> None:
    data = redox_json()
    data["entry"].append(data["entry"].pop(0))
    with pytest.raises(MappingError, match=r"Bundle.entry\[0\] is not a Composition"):
        build(Bundle.model_validate(data), consult_context, now)


@pytest.mark.parametrize(
    ("bundle_type", "drop_composition", "message"),
    [("collection", True, "holds 0 Compositions"), ("searchset", False, "document or a collection, not searchset")],
    ids=["collection-without-composition", "searchset"],
)
def test_other_bundles_are_refused(consult_context: ConsultContext, now: datetime, bundle_type: str,
                                   drop_composition: bool, message: str) -> None:
    data = redox_json() | {"type": bundle_type}
    if drop_composition:
        data["entry"] = data["entry"][1:]
    with pytest.raises(MappingError, match=message):
        build(Bundle.model_validate(data), consult_context, now)


def test_repeated_full_urls_are_refused(consult_context: ConsultContext, now: datetime) -> None:
    data = redox_json()
    data["entry"][3]["fullUrl"] = data["entry"][2]["fullUrl"]
    with pytest.raises(MappingError, match=r"Bundle.entry\[3\].fullUrl repeats Bundle.entry\[2\].fullUrl"):
        build(Bundle.model_validate(data), consult_context, now)
