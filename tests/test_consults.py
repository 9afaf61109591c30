"""Consults in every form (FHIR JSON, FHIR XML, C-CDA) over the API: the second opinion's conclusions, bad input."""

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from flask.testing import FlaskClient

from fixtures.consultant import ccda_consult_for_packet, consult_for_packet, consult_xml_for_packet
from mappers.validation import check_document_bundle
from service.store.repository import get_repository
from tests.conftest import ROOT, assert_outcome, wait_for_status

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
CDA_XML = "application/cda+xml"
HOSTILE = ROOT / "fixtures" / "consults"
CORPUS_FHIR_XML = ROOT.parent / "shared" / "corpus" / "fhir-examples" / "ccda-on-fhir" / "Consultation-Note-Example.xml"
PROSTATE = "so-prostate-patient"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SECRET = "s3cr3t-consult-marker-5d1e"


@pytest.fixture
def client(make_app) -> FlaskClient:  # noqa: ANN001
    """The service without a write-back worker: these tests need no write-back, and the shared sandbox EHR
    then keeps no consult documents from them (other tests count the patients' reports)."""
    return make_app(worker=False, WRITEBACK="off").test_client()


# --- helpers (also used by the other test_consults_* files) ----------------------------------------------

def sent_referral(client: FlaskClient, patient: str = PROSTATE) -> tuple[str, Bundle]:
    """Draft and send a referral; return its id and its frozen packet."""
    resp = client.post("/api/referrals", json={"patient": patient, "question": "Is the diagnosis right?"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    referral_id = resp.get_json()["id"]
    assert client.post(f"/api/referrals/{referral_id}/send").status_code == 200
    return referral_id, Bundle.model_validate(client.get(f"/api/referrals/{referral_id}/packet").get_json())


def consult_body(packet: Bundle, fmt: str, **options: object) -> bytes:
    """The fixture consultant's answer to a packet, as FHIR JSON, FHIR XML or C-CDA."""
    now = datetime.now(UTC)
    if fmt == "fhir-json":
        return consult_for_packet(packet, now=now, **options).model_dump_json(exclude_none=True).encode()
    if fmt == "fhir-xml":
        return consult_xml_for_packet(packet, now=now, **options)
    return ccda_consult_for_packet(packet, now=now, **options)


def post_consult(client: FlaskClient, referral_id: str, body: bytes, content_type: str):  # noqa: ANN201
    return client.post(f"/api/referrals/{referral_id}/consult", data=body, headers={"Content-Type": content_type})


def assert_nothing_stored(client: FlaskClient, referral_id: str) -> None:
    """A rejected consult leaves the referral as it was: requested, no consult, no write-back."""
    body = client.get(f"/api/referrals/{referral_id}").get_json()
    assert body["status"] == "requested"
    assert "consult" not in body and "concordance" not in body
    assert get_repository(client.application).find_consult(referral_id) is None


def condition_keys(items: list[dict]) -> list[str]:
    return [item["condition"] for item in items]


def codes(items: list[dict]) -> list[str]:
    return [item["code"] for item in items]


# --- the three formats and what the second opinion concluded --------------------------------------------

FORMATS = [("fhir-json", FHIR_JSON), ("fhir-json", "application/json"), ("fhir-xml", FHIR_XML),
           ("fhir-xml", "application/xml"), ("ccda", CDA_XML), ("ccda", "text/xml"), ("ccda", "application/xml")]
FORMAT_IDS = ["fhir+json", "json", "fhir+xml", "xml-with-fhir-root", "cda+xml", "text-xml-ccda", "xml-ccda"]


@pytest.mark.parametrize("fmt,content_type", FORMATS, ids=FORMAT_IDS)
def test_consult_that_confirms_one_revises_one_and_adds_one(client, fmt: str, content_type: str) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client)
    resp = post_consult(client, referral_id, consult_body(packet, fmt), content_type)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    concordance = resp.get_json()["concordance"]
    assert condition_keys(concordance["confirmed"]) == ["Condition/so-prostate-cond-prostate-cancer"]
    assert [(r["from"]["condition"], r["to"]["code"]) for r in concordance["revised"]] == [
        ("Condition/so-prostate-cond-hyperlipidemia", f"{ICD10CM}|E78.2")]
    assert codes(concordance["new"]) == [f"{ICD10CM}|E55.9"]
    assert concordance["refuted"] == []
    assert set(condition_keys(concordance["not_addressed"])) == {
        "Condition/so-prostate-cond-bph", "Condition/so-prostate-cond-hypertension",
        "Condition/so-prostate-cond-appendicitis", "Condition/so-prostate-cond-kidney-stone"}
    assert sorted(a["display"] for a in concordance["alternatives"]) == [
        "Multidisciplinary team review of the treatment options", "atorvastatin 80 MG Oral Tablet"]
    assert client.get(f"/api/referrals/{referral_id}").get_json()["concordance"] == concordance


@pytest.mark.parametrize("fmt,content_type", [FORMATS[0], FORMATS[2], FORMATS[4]], ids=["fhir+json", "fhir+xml", "cda"])
def test_consult_document_leads_with_the_second_opinion_summary(client, fmt: str, content_type: str) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client)
    assert post_consult(client, referral_id, consult_body(packet, fmt), content_type).status_code == 202
    document = Bundle.model_validate(client.get(f"/api/referrals/{referral_id}/consult").get_json())
    assert check_document_bundle(document) == []
    assert Bundle.model_validate(document.model_dump()) == document
    composition = document.entry[0].resource
    assert composition.type.coding[0].code == "11488-4"
    summary = composition.section[0]
    assert summary.title == "Second-opinion summary"
    assert (summary.code.coding[0].system, summary.code.coding[0].code) == ("http://loinc.org", "55110-1")
    assert "Hyperlipidemia" in summary.text.div and "Mixed hyperlipidemia (ICD-10-CM E78.2)" in summary.text.div
    by_url = {e.fullUrl: e.resource for e in document.entry}
    listed = [by_url[e.reference] for e in summary.entry]
    assert {r.get_resource_type() for r in listed} == {"Condition", "MedicationRequest", "ServiceRequest"}
    order = [e for e in composition.extension if e.url.endswith("/OrderExtension")]
    packet_order = next(e.resource for e in packet.entry if e.resource.get_resource_type() == "ServiceRequest")
    assert order and order[0].valueReference.identifier.value == packet_order.identifier[0].value


@pytest.mark.parametrize("fmt,content_type", [FORMATS[0], FORMATS[2], FORMATS[4]], ids=["fhir+json", "fhir+xml", "cda"])
def test_consult_that_refutes_a_diagnosis(client, fmt: str, content_type: str) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client)
    resp = post_consult(client, referral_id, consult_body(packet, fmt, refute=True), content_type)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    concordance = resp.get_json()["concordance"]
    assert condition_keys(concordance["refuted"]) == ["Condition/so-prostate-cond-bph"]
    assert "Condition/so-prostate-cond-bph" not in condition_keys(concordance["not_addressed"])
    assert condition_keys(concordance["confirmed"]) == ["Condition/so-prostate-cond-prostate-cancer"]


def test_revision_to_another_category_is_known_only_through_the_link(client) -> None:  # noqa: ANN001
    """FHIR carries Condition.evidence.detail → the referred Condition; C-CDA cannot, so there it is a new diagnosis."""
    revisions = {"I10": ("I15.9", "Secondary hypertension, unspecified")}
    fhir_id, packet = sent_referral(client)
    resp = post_consult(client, fhir_id, consult_body(packet, "fhir-json", revisions=revisions), FHIR_JSON)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    revised = resp.get_json()["concordance"]["revised"]
    assert [(r["from"]["condition"], r["to"]["code"]) for r in revised] == [
        ("Condition/so-prostate-cond-hypertension", f"{ICD10CM}|I15.9")]
    document = client.get(f"/api/referrals/{fhir_id}/consult").get_json()
    linked = [d for e in document["entry"] if e["resource"]["resourceType"] == "Condition"
              for ev in e["resource"].get("evidence", []) for d in ev.get("detail", [])]
    target = next(d for d in linked if d["identifier"]["value"].endswith("/Condition/so-prostate-cond-hypertension"))
    assert "reference" not in target and target["type"] == "Condition"
    assert target["identifier"] == {"system": "urn:ietf:rfc:3986",
                                    "value": f"{client.application.config['FHIR_BASE_URL']}/Condition/"
                                             "so-prostate-cond-hypertension"}

    ccda_id, packet = sent_referral(client)
    concordance = post_consult(client, ccda_id, consult_body(packet, "ccda", revisions=revisions),
                               CDA_XML).get_json()["concordance"]
    assert concordance["revised"] == []
    assert f"{ICD10CM}|I15.9" in codes(concordance["new"])
    assert "Condition/so-prostate-cond-hypertension" in condition_keys(concordance["not_addressed"])


def test_recommending_the_current_treatment_is_not_an_alternative(client) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client, "so-cad-patient")  # already on atorvastatin 80 MG
    concordance = post_consult(client, referral_id, consult_body(packet, "fhir-json"), FHIR_JSON).get_json()[
        "concordance"]
    assert [a["display"] for a in concordance["alternatives"]] == [
        "Multidisciplinary team review of the treatment options"]
    assert condition_keys(concordance["confirmed"]) == ["Condition/so-cad-cond-coronary-disease"]


def test_ccda_consult_is_written_back_with_its_summary(make_app, ehr) -> None:  # noqa: ANN001
    client = make_app().test_client()
    referral_id, packet = sent_referral(client)
    assert post_consult(client, referral_id, consult_body(packet, "ccda"), CDA_XML).status_code == 202
    done = wait_for_status(client, referral_id)
    assert done["status"] == "completed", done["writeback"]
    written = next(b for b in ehr.store.all("Bundle")
                   if b.get("identifier", {}).get("value")
                   == client.get(f"/api/referrals/{referral_id}/consult").get_json()["identifier"]["value"])
    assert written["entry"][0]["resource"]["section"][0]["code"]["coding"][0]["code"] == "55110-1"
    assert done["consult"]["content_type"] == CDA_XML


# --- the wrong patient --------------------------------------------------------------------------------------

def other_patient(packet: Bundle) -> Patient:
    """The packet's patient with another record number and birth date."""
    patient = next(e.resource for e in packet.entry if isinstance(e.resource, Patient)).model_copy(deep=True)
    patient.identifier[0].value = "SO-9999"
    patient.birthDate = "1950-01-01"
    return patient


def test_ccda_consult_about_another_patient_is_422_and_nothing_is_stored(client) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client)
    body = ccda_consult_for_packet(packet, now=datetime.now(UTC), patient=other_patient(packet))
    outcome = assert_outcome(post_consult(client, referral_id, body, CDA_XML), 422, "processing")
    assert "different patient" in outcome["issue"][0]["diagnostics"]
    assert "SO-9999" not in str(outcome) and "1950" not in str(outcome)
    assert_nothing_stored(client, referral_id)


def test_fhir_xml_consult_about_another_patient_is_422(client) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client)
    consult = consult_for_packet(packet, now=datetime.now(UTC))
    next(e.resource for e in consult.entry if isinstance(e.resource, Patient)).identifier[0].value = "SO-9999"
    from mappers.fhirxml import dump_fhir_xml

    outcome = assert_outcome(post_consult(client, referral_id, dump_fhir_xml(consult), FHIR_XML), 422)
    assert "different patient" in outcome["issue"][0]["diagnostics"]
    assert_nothing_stored(client, referral_id)


# --- hostile XML: 400, no file read, no connection, nothing stored -------------------------------------------

@pytest.fixture
def watched_file(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], bool]]]:
    """A named pipe standing in for a secret file: opened() tells whether anyone opened it to read."""
    fifo = tmp_path / "secret-fifo"
    os.mkfifo(fifo)
    state = {"opened": False, "closing": False}

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens the pipe
        if not state["closing"]:
            state["opened"] = True
        try:
            os.write(fd, SECRET.encode())
        except OSError:
            pass
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    yield fifo, lambda: state["opened"]
    state["closing"] = True
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer if nobody else did
    thread.join(timeout=5)
    os.close(reader)


HOSTILE_CASES = [(name, ct) for name in sorted(p.name for p in HOSTILE.glob("*.xml"))
                 for ct in ((FHIR_XML, "application/xml") if name.endswith(".fhir.xml") else (CDA_XML, "text/xml"))]


@pytest.mark.parametrize("name,content_type", HOSTILE_CASES, ids=[f"{n}-{c}" for n, c in HOSTILE_CASES])
def test_hostile_xml_is_400_reads_no_file_and_opens_no_connection(client, watched_file, loopback_listener, name: str,
                                                                   content_type: str) -> None:  # noqa: ANN001
    fifo, opened = watched_file
    port, connections = loopback_listener
    dtd_url = f"http://127.0.0.1:{port}/consult.dtd"
    referral_id, _ = sent_referral(client)
    body = (HOSTILE / name).read_bytes().replace(b"@FILE_URL@", f"file://{fifo}".encode()).replace(
        b"@DTD_URL@", dtd_url.encode())
    resp = post_consult(client, referral_id, body, content_type)
    outcome = assert_outcome(resp, 400)
    assert outcome["issue"][0]["code"] in ("security", "invalid")
    assert "DTD" in outcome["issue"][0]["diagnostics"] or "entity" in outcome["issue"][0]["diagnostics"].lower()
    assert SECRET not in resp.get_data(as_text=True)
    assert not opened() and connections == []
    assert_nothing_stored(client, referral_id)


def test_fifty_megabyte_consult_is_413_outcome(client) -> None:  # noqa: ANN001
    referral_id, _ = sent_referral(client)
    body = b"<ClinicalDocument xmlns='urn:hl7-org:v3'>" + b" " * (50 * 1024 * 1024) + b"</ClinicalDocument>"
    for content_type in (CDA_XML, FHIR_XML, FHIR_JSON):
        assert_outcome(post_consult(client, referral_id, body, content_type), 413, "too-costly")
    assert_nothing_stored(client, referral_id)
    assert_outcome(client.post("/api/referrals", data=body, content_type="application/json"), 413, "too-costly")


def test_ccda_over_the_mapper_cap_but_under_the_request_cap_is_413(client) -> None:  # noqa: ANN001
    referral_id, _ = sent_referral(client)
    body = b"<ClinicalDocument xmlns='urn:hl7-org:v3'>" + b" " * (21 * 1024 * 1024) + b"</ClinicalDocument>"
    assert_outcome(post_consult(client, referral_id, body, CDA_XML), 413, "too-costly")
    assert_nothing_stored(client, referral_id)


# --- malformed or unmappable consults ---------------------------------------------------------------------------

MALFORMED = [
    (b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title>unclosed", CDA_XML, 400, "not well-formed"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><type value='document'/>", FHIR_XML, 400, "not well-formed"),
    (b"", FHIR_XML, 400, "not well-formed"),
    (b"<html xmlns='http://www.w3.org/1999/xhtml'/>", CDA_XML, 400, "ClinicalDocument"),
    (b"<Patient xmlns='http://hl7.org/fhir'/>", FHIR_XML, 422, "Bundle or Composition"),
    (b"<Bundle xmlns='urn:example'/>", FHIR_XML, 422, "namespace"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><type value='document'/><nope value='1'/></Bundle>", FHIR_XML, 422,
     "unknown element"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><type>document</type></Bundle>", FHIR_XML, 422, "text content"),
    (b"<f:Bundle xmlns:f='http://hl7.org/fhir'><f:type value='document'/></f:Bundle>", FHIR_XML, 422, "prefix"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><type value='document'/></Bundle>", FHIR_XML, 422, "Composition"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><timestamp value='yesterday'/><type value='document'/></Bundle>",
     FHIR_XML, 422, "timestamp"),
    (b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>", CDA_XML, 422, "recordTarget"),
    (b'{"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": null}}]}', FHIR_JSON,
     422, "resourceType"),
    (b'{"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Nope"}}]}', FHIR_JSON,
     422, "resourceType"),
    (b'{"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "DocumentReference", '
     b'"status": "current", "content": [{"attachment": {"url": 5}}]}}]}', FHIR_JSON, 422, "wrong JSON type"),
    (b"[" * 100000, FHIR_JSON, 400, "nested too deeply"),
    (b"{}", "application/pdf", 415, "application/cda+xml"),
    (b"{}", "", 415, "no Content-Type"),
]


@pytest.mark.parametrize("body,content_type,status,says", MALFORMED,
                         ids=["ccda-not-well-formed", "fhir-not-well-formed", "empty-xml", "ccda-wrong-root",
                              "fhir-wrong-resource", "fhir-wrong-namespace", "fhir-unknown-element",
                              "fhir-text-content", "fhir-prefixed", "fhir-no-composition", "fhir-bad-instant",
                              "ccda-no-patient", "json-null-resource-type", "json-unknown-resource-type",
                              "json-url-not-a-string", "json-nested-too-deeply", "pdf", "no-content-type"])
def test_malformed_consult_is_a_specific_4xx_and_nothing_is_stored(client, body: bytes, content_type: str,
                                                                   status: int, says: str) -> None:  # noqa: ANN001
    referral_id, _ = sent_referral(client)
    outcome = assert_outcome(post_consult(client, referral_id, body, content_type), status)
    assert says in outcome["issue"][0]["diagnostics"]
    assert_nothing_stored(client, referral_id)


def test_real_world_fhir_xml_composition_is_read_and_refused_for_what_it_lacks(client) -> None:  # noqa: ANN001
    """The C-CDA on FHIR Consultation Note example parses; its entries point at resources it does not carry."""
    referral_id, _ = sent_referral(client)
    outcome = assert_outcome(post_consult(client, referral_id, CORPUS_FHIR_XML.read_bytes(), FHIR_XML), 422)
    assert "which is not contained in the Composition" in outcome["issue"][0]["diagnostics"]
    assert_nothing_stored(client, referral_id)
