"""FHIR XML: content negotiation on the GET endpoints, and XML ⇄ JSON round trips that change nothing."""

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from flask.testing import FlaskClient
from lxml import etree

from fixtures.consultant import consult_for_packet
from mappers.errors import MappingError
from mappers.fhirxml import dump_fhir_xml, parse_fhir_xml
from tests.conftest import CORPUS, assert_outcome
from tests.test_consults import FHIR_JSON, FHIR_XML, post_consult, sent_referral

# Every JSON example of the FHIR R4 core and US Core sets in the corpus, except diagnosticreport-cbc.json, whose
# narrative has no div (invalid R4: Narrative.div is 1..1), so R4B refuses it as JSON already.
R4_EXAMPLES = [p for p in sorted((CORPUS / "fhir-examples" / "core-r4").glob("*.json"))
               + sorted((CORPUS / "fhir-examples" / "us-core").glob("*.json")) if p.name != "diagnosticreport-cbc.json"]
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)")


@pytest.fixture
def client(make_app) -> FlaskClient:  # noqa: ANN001
    """The service without a write-back worker: these tests need no write-back, and the shared sandbox EHR
    then keeps no consult documents from them (other tests count the patients' reports)."""
    return make_app(worker=False, WRITEBACK="off").test_client()


def xml_to_json(data: bytes, resource_type: str = "Bundle") -> dict:
    return json.loads(parse_fhir_xml(data, (resource_type,)).model_dump_json(exclude_none=True))


def through_models(resource: dict) -> dict:
    """The JSON as the models write it: the packet's JSON passes the EHR's text through (instants such as
    `.713+00:00` byte for byte), while XML can only be written from the models (`.713000Z`, the same instant)."""
    return json.loads(get_fhir_model_class(resource["resourceType"]).model_validate(resource)
                      .model_dump_json(exclude_none=True))


# --- negotiation ----------------------------------------------------------------------------------------------

XML_ASKS = [("?_format=xml", {}), ("?_format=application/fhir%2Bxml", {}), ("?_format=application/fhir+xml", {}),
            ("?_format=text/xml", {}), ("", {"Accept": FHIR_XML}), ("", {"Accept": "application/xml"}),
            ("", {"Accept": "text/xml;q=0.9, application/json;q=0.5"}),
            ("?_format=xml", {"Accept": FHIR_JSON})]


@pytest.mark.parametrize("query,headers", XML_ASKS,
                         ids=["format-xml", "format-fhir-xml-encoded", "format-fhir-xml-plus-as-space",
                              "format-text-xml", "accept-fhir-xml", "accept-xml", "accept-xml-preferred",
                              "format-overrides-accept"])
def test_packet_as_xml_parses_to_the_same_json(client, query: str, headers: dict) -> None:  # noqa: ANN001
    referral_id, _ = sent_referral(client)
    as_json = client.get(f"/api/referrals/{referral_id}/packet").get_json()
    resp = client.get(f"/api/referrals/{referral_id}/packet{query}", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == f"{FHIR_XML}; charset=utf-8"
    assert "Accept" in resp.headers["Vary"]
    assert resp.data.startswith(b"<?xml") and b'xmlns="http://hl7.org/fhir"' in resp.data[:200]
    assert xml_to_json(resp.data) == through_models(as_json)


@pytest.mark.parametrize("query,headers", [("", {}), ("?_format=json", {}), ("?_format=application/fhir+json", {}),
                                           ("", {"Accept": "*/*"}), ("", {"Accept": "application/json"}),
                                           ("?_format=json", {"Accept": FHIR_XML}),
                                           ("", {"Accept": "application/fhir+xml;q=0.2, application/fhir+json"})],
                         ids=["default", "format-json", "format-fhir-json", "accept-any", "accept-json",
                              "format-overrides-accept", "accept-json-preferred"])
def test_packet_as_json_when_json_is_asked_for_or_nothing_is(client, query: str, headers: dict) -> None:  # noqa: ANN001
    referral_id, _ = sent_referral(client)
    resp = client.get(f"/api/referrals/{referral_id}/packet{query}", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    assert resp.get_json()["resourceType"] == "Bundle"


@pytest.mark.parametrize("path_suffix", ["packet", "consult"])
@pytest.mark.parametrize("query,headers", [("?_format=ttl", {}), ("?_format=docx", {}), ("?_format=", {}),
                                           ("", {"Accept": "text/turtle"}), ("", {"Accept": "image/png"})],
                         ids=["format-ttl", "format-docx", "format-empty", "accept-turtle", "accept-png"])
def test_a_format_we_do_not_serve_is_406(client, path_suffix: str, query: str, headers: dict) -> None:  # noqa: ANN001
    referral_id, packet = sent_referral(client)
    post_consult(client, referral_id, consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(), FHIR_JSON)
    outcome = assert_outcome(client.get(f"/api/referrals/{referral_id}/{path_suffix}{query}", headers=headers), 406,
                             "not-supported")
    assert FHIR_XML in outcome["issue"][0]["diagnostics"]


def test_unknown_referral_in_xml_is_still_a_404_outcome(client) -> None:  # noqa: ANN001
    assert_outcome(client.get("/api/referrals/nope/packet?_format=xml"), 404, "not-found")
    referral_id, _ = sent_referral(client)
    assert_outcome(client.get(f"/api/referrals/{referral_id}/consult", headers={"Accept": FHIR_XML}), 404)


# --- round trips ----------------------------------------------------------------------------------------------

def without_volatile(document: dict) -> str:
    """A consult document with uuids numbered by first appearance, and instants (our clock) blanked."""
    text = INSTANT.sub("<instant>", json.dumps(document, sort_keys=True))
    numbering: dict[str, str] = {}
    return UUID.sub(lambda m: numbering.setdefault(m.group(0), f"<uuid-{len(numbering)}>"), text)


def test_consult_in_fhir_xml_round_trips_to_the_same_document_as_its_json_twin(client) -> None:  # noqa: ANN001
    json_id, packet = sent_referral(client)
    xml_id, xml_packet = sent_referral(client)
    # linked by "Condition/<EHR id>", which both referrals share (their packets' fullUrls differ)
    consult = consult_for_packet(packet, now=datetime.now(UTC), refute=True, link_by_id=True)
    assert post_consult(client, json_id, consult.model_dump_json(exclude_none=True), FHIR_JSON).status_code == 202
    twin = dump_fhir_xml(consult)
    assert post_consult(client, xml_id, twin, FHIR_XML).status_code == 202
    from_json = client.get(f"/api/referrals/{json_id}/consult").get_json()
    from_xml = client.get(f"/api/referrals/{xml_id}/consult").get_json()
    assert without_volatile(from_json) == without_volatile(from_xml)
    assert from_json != from_xml  # ids, the referral's order identifier and timestamps do differ
    assert (client.get(f"/api/referrals/{json_id}").get_json()["concordance"]["refuted"]
            == client.get(f"/api/referrals/{xml_id}").get_json()["concordance"]["refuted"] != [])
    as_xml = client.get(f"/api/referrals/{xml_id}/consult?_format=xml")
    assert xml_to_json(as_xml.data) == from_xml


def canonical_divs(value: object) -> object:
    """JSON with every narrative div in canonical XML form (C14N: <td/> and <td></td> are the same element)."""
    if isinstance(value, dict):
        return {k: etree.tostring(etree.fromstring(v), method="c14n").decode() if k == "div" else canonical_divs(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [canonical_divs(v) for v in value]
    return value


@pytest.mark.parametrize("path", R4_EXAMPLES, ids=[p.name for p in R4_EXAMPLES])
def test_fhir_examples_survive_json_to_xml_to_json(path: Path) -> None:
    """Exact, except that narrative written <td/> in JSON comes back <td></td> (same XHTML; see mappers/fhirxml)."""
    data = json.loads(path.read_text("utf-8"))
    model = get_fhir_model_class(data["resourceType"]).model_validate(data)
    expected = json.loads(model.model_dump_json(exclude_none=True))
    assert canonical_divs(xml_to_json(dump_fhir_xml(model), data["resourceType"])) == canonical_divs(expected)


def test_decimals_keep_their_precision_in_xml() -> None:
    observation = Observation.model_validate({
        "resourceType": "Observation", "status": "final", "code": {"text": "Hb"},
        "valueQuantity": {"value": Decimal("100.00"), "unit": "g/L"},
        "referenceRange": [{"low": {"value": 130}, "high": {"value": Decimal("1.5E+2")}}]})
    xml = dump_fhir_xml(observation)
    assert b'<value value="100.00"/>' in xml and b'<value value="130"/>' in xml and b'<value value="150"/>' in xml
    back = parse_fhir_xml(xml, ("Observation",))
    assert back.valueQuantity.value == Decimal("100.00") and str(back.valueQuantity.value) == "100.00"


def test_narrative_is_read_back_as_its_json_twin_writes_it() -> None:
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>\u21b3 a&amp;b</p><table><tr><td></td></tr></table><br/></div>'
    bundle = Bundle.model_validate({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "Patient", "text": {"status": "generated", "div": div}}}]})
    back = parse_fhir_xml(dump_fhir_xml(bundle), ("Bundle",))
    assert back.entry[0].resource.text.div == div


@pytest.mark.parametrize("data,status,says", [
    (b"<Bundle xmlns='http://hl7.org/fhir'><type value='collection'/></Bundle>", 413, "larger than"),
    (b"<?xml version='1.0'?>\n<!-- c -->\n<!DOCTYPE Bundle []><Bundle xmlns='http://hl7.org/fhir'/>", 400, "DTD"),
    (b"\xef\xbb\xbf<!DOCTYPE Bundle><Bundle xmlns='http://hl7.org/fhir'/>", 400, "DTD"),
    ("<!DOCTYPE Bundle><Bundle xmlns='http://hl7.org/fhir'/>".encode("utf-16"), 400, "DTD"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><type value='collection'/><p xmlns='http://www.w3.org/1999/xhtml'/>"
     b"</Bundle>", 422, "not in the FHIR namespace"),
    (b"<Bundle xmlns='http://hl7.org/fhir'><type value='collection'/>tail</Bundle>", 422, "text content"),
], ids=["too-large", "dtd-after-comment", "dtd-after-bom", "dtd-utf16", "xhtml-outside-narrative", "tail-text"])
def test_parse_fhir_xml_refuses_what_is_not_plain_fhir_xml(data: bytes, status: int, says: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_fhir_xml(data, ("Bundle",), max_bytes=60 if status == 413 else 1024)
    assert caught.value.status == status
    assert says in caught.value.diagnostics
