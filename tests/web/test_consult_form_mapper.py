"""mappers/consult_form.py: the consult form's answers → a FHIR consult document that the intake accepts and whose
concordance comes out as the consultant meant (confirmed, revised, refuted, new)."""

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.condition import Condition

from mappers.consult_form import (Consultant, ConsultForm, Diagnosis, Judgement, build_consult_form_bundle,
                                  check_consult_form)
from mappers.errors import MappingError
from mappers.ids import sequential_ids
from service.web.consultant import diagnosis_from_text
from service.web.packet_view import packet_view

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
CONSULTANT = Consultant("demo-urology", "Dr. Avery Quill (synthetic)", "Urologic oncology")
VITAMIN_D = Coding(system="http://hl7.org/fhir/sid/icd-10-cm", code="E55.9", display="Vitamin D deficiency")


@pytest.fixture
def sent_packet(make_app):  # noqa: ANN001, ANN201
    client = make_app(WRITEBACK="inline").test_client()
    created = client.post("/api/referrals", json={"patient": "so-prostate-patient", "question": "Surveillance?",
                                                  "patient_questions": ["What can be done other than surgery?"]})
    assert created.status_code == 201, created.get_data(as_text=True)[:300]
    referral_id = created.get_json()["id"]
    assert client.post(f"/api/referrals/{referral_id}/send").status_code == 200
    packet = Bundle.model_validate(client.get(f"/api/referrals/{referral_id}/packet").get_json())
    return client, referral_id, packet


def _condition(packet: Bundle, condition_id: str) -> Condition:
    return next(e.resource for e in packet.entry if isinstance(e.resource, Condition) and e.resource.id == condition_id)


def test_the_form_document_goes_through_the_intake_with_the_right_concordance(sent_packet):  # noqa: ANN001
    client, referral_id, packet = sent_packet
    form = ConsultForm(
        judgements=[Judgement(_condition(packet, "so-prostate-cond-prostate-cancer"), "confirm"),
                    Judgement(_condition(packet, "so-prostate-cond-hyperlipidemia"), "revise",
                              Diagnosis("Mixed hyperlipidemia")),
                    Judgement(_condition(packet, "so-prostate-cond-appendicitis"), "refute", note="No evidence.")],
        new_diagnoses=[Diagnosis("Vitamin D deficiency", VITAMIN_D)],
        recommendation="Active surveillance", alternatives=["Focal therapy"],
        answers=[("Surveillance?", "Yes."), ("What can be done other than surgery?", "Radiotherapy.")],
        assessment="Grade Group 2, low volume.")
    bundle = build_consult_form_bundle(form, patient=packet_view(packet).patient, consultant=CONSULTANT, now=NOW,
                                       new_id=sequential_ids())
    assert bundle.type == "document" and bundle.entry[0].resource.get_resource_type() == "Composition"
    posted = client.post(f"/api/referrals/{referral_id}/consult", data=bundle.model_dump_json(exclude_none=True),
                         content_type="application/fhir+json")
    assert posted.status_code == 202, posted.get_data(as_text=True)[:500]
    concordance = client.get(f"/api/referrals/{referral_id}").get_json()["concordance"]
    assert [i["condition"] for i in concordance["confirmed"]] == ["Condition/so-prostate-cond-prostate-cancer"]
    assert [(i["from"]["condition"], i["to"]["display"]) for i in concordance["revised"]] == \
        [("Condition/so-prostate-cond-hyperlipidemia", "Mixed hyperlipidemia")]
    assert [i["condition"] for i in concordance["refuted"]] == ["Condition/so-prostate-cond-appendicitis"]
    assert concordance["new"] == [{"code": "http://hl7.org/fhir/sid/icd-10-cm|E55.9",
                                   "display": "Vitamin D deficiency"}]
    assert {i["display"] for i in concordance["alternatives"]} == {"Active surveillance", "Focal therapy"}
    document = client.get(f"/api/referrals/{referral_id}/consult").get_json()
    kinds = [e["resource"]["resourceType"] for e in document["entry"]]
    assert kinds.count("Condition") == 4 and "Practitioner" in kinds
    author = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Practitioner")
    assert author["name"][0]["text"] == CONSULTANT.name
    titles = [s["title"] for s in document["entry"][0]["resource"]["section"]]
    assert "Answers to the questions asked" in titles and "Recommendations" in titles


def test_the_mapper_is_pure_and_checks_its_input(sent_packet):  # noqa: ANN001
    _, _, packet = sent_packet
    cancer = _condition(packet, "so-prostate-cond-prostate-cancer")
    form = ConsultForm(judgements=[Judgement(cancer, "confirm")])
    patient = packet_view(packet).patient
    first = build_consult_form_bundle(form, patient=patient, consultant=CONSULTANT, now=NOW, new_id=sequential_ids())
    again = build_consult_form_bundle(form, patient=patient, consultant=CONSULTANT, now=NOW, new_id=sequential_ids())
    assert first.model_dump_json() == again.model_dump_json()
    condition = next(e.resource for e in first.entry if isinstance(e.resource, Condition))
    assert condition.evidence[0].detail[0].reference == "Condition/so-prostate-cond-prostate-cancer"
    assert condition.verificationStatus.coding[0].code == "confirmed"
    assert [c.code for c in condition.code.coding] == [c.code for c in cancer.code.coding]
    with pytest.raises(MappingError, match="needs the new diagnosis"):
        check_consult_form(ConsultForm(judgements=[Judgement(cancer, "revise")]))
    with pytest.raises(MappingError, match="unknown verdict"):
        check_consult_form(ConsultForm(judgements=[Judgement(cancer, "maybe")]))
    with pytest.raises(MappingError, match="empty"):
        check_consult_form(ConsultForm())


def test_the_search_box_offers_the_packets_codes_and_accepts_free_text(sent_packet):  # noqa: ANN001
    _, _, packet = sent_packet
    options = packet_view(packet).code_options
    label = next(k for k in options if "E78.5" in k)
    chosen = diagnosis_from_text(label, options)
    assert chosen is not None and chosen.coding is not None and chosen.coding.code == "E78.5"
    typed = diagnosis_from_text("Familial hypercholesterolaemia", options)
    assert typed == Diagnosis("Familial hypercholesterolaemia")
    assert diagnosis_from_text("  ", options) is None
