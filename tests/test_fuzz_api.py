"""Property-based fuzzing of the referral and consult endpoints: malformed FHIR JSON/XML, C-CDA and API bodies.

Whatever arrives: never a 5xx, every error an OperationOutcome, and nothing stored for a rejected body.
670 examples in all (bench/fuzz.py does the same at scale).
"""

import json
from copy import deepcopy
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fixtures.consultant import ccda_consult_for_packet, consult_for_packet, consult_xml_for_packet
from mappers.fhirxml import XML_PARSER
from service.store.models import ReferralRow
from service.store.repository import get_repository
from tests.test_consults import CDA_XML, FHIR_JSON, FHIR_XML, sent_referral

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
CONTENT_TYPES = [FHIR_JSON, "application/json", FHIR_XML, "application/xml", "text/xml", CDA_XML,
                 "application/fhir+json; charset=utf-8", "text/plain", "", "multipart/form-data; boundary=x",
                 "application/fhir+xml;;;", "APPLICATION/CDA+XML"]
FHIR_NAMES = ["Bundle", "Composition", "entry", "resource", "fullUrl", "type", "section", "entry", "title", "text",
              "div", "status", "author", "subject", "reference", "Patient", "Condition", "code", "coding", "system",
              "value", "identifier", "timestamp", "date", "extension", "url", "valueReference", "evidence", "detail"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FHIR_NAMES) | st.text(max_size=8),
                                                                inner, max_size=4),
    max_leaves=20)


@st.composite
def fhirish_json(draw: st.DrawFn) -> bytes:
    """A JSON object that claims to be a Bundle or Composition, with FHIR-looking fields and random values."""
    body = draw(st.dictionaries(st.sampled_from(FHIR_NAMES), json_values, max_size=6))
    body["resourceType"] = draw(st.sampled_from(["Bundle", "Composition", "Patient", "", 3]))
    return json.dumps(body).encode()


@st.composite
def fhirish_xml(draw: st.DrawFn, depth: int = 0) -> str:
    """An XML element from FHIR names, in the FHIR namespace or not, with value attributes, text or children."""
    name = draw(st.sampled_from(FHIR_NAMES))
    attrs = draw(st.sampled_from(["", ' value="x"', ' value=""', ' url="u"', ' value="2026-01-01"', ' id="a"']))
    namespace = ' xmlns="http://hl7.org/fhir"' if depth == 0 and draw(st.booleans()) else ""
    children = "" if depth >= 3 else "".join(draw(st.lists(fhirish_xml(depth + 1), max_size=3)))
    text = draw(st.sampled_from(["", "", "t", "&amp;", "<![CDATA[c]]>"]))
    return f"<{name}{namespace}{attrs}>{text}{children}</{name}>"


random_bodies = (st.binary(max_size=600) | fhirish_json()
                 | st.builds(lambda x: x.encode(), fhirish_xml())
                 | st.builds(lambda v: json.dumps(v).encode(), json_values))


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """A valid consult with a few byte-level edits: delete, insert, replace, duplicate or truncate a span."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, max(len(data) - 1, 0)))
        end = min(len(data), start + draw(st.integers(1, 64)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "truncate"]))
        junk = draw(st.sampled_from([b"<", b">", b"&", b'"', b"{", b"}", b"]", b"\x00", b"\xff\xfe", b"<!DOCTYPE x>",
                                     b"&e;", b"null", b"</section>", b"<entry>", b"99999999999999999999"]))
        if op == "delete":
            del data[start:end]
        elif op == "insert":
            data[start:start] = junk
        elif op == "replace":
            data[start:end] = junk
        elif op == "duplicate":
            data[start:start] = data[start:end]
        else:
            del data[start:]
    return bytes(data)


JUNK_VALUES = ["", "x", "-1", "0.000", "1e400", "99999999999999999999", "2026-13-45", "20261345", "true", "urn:uuid:x",
               "#", "Condition/", "http://ehr.example/fhir/Condition/so-prostate-cond-bph", "\u21b3", "  ", "NI"]
JUNK_ATTRIBUTES = ["value", "code", "codeSystem", "root", "extension", "nullFlavor", "negationInd", "moodCode",
                   "classCode", "typeCode", "url", "id", "{http://www.w3.org/2001/XMLSchema-instance}type"]


@st.composite
def tree_mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """A valid XML consult, still well-formed, with elements deleted, copied, moved, renamed or re-valued."""
    root = etree.fromstring(seed, XML_PARSER)
    for _ in range(draw(st.integers(3, 10))):
        elements = [e for e in root.iter() if isinstance(e.tag, str)]
        element = draw(st.sampled_from(elements))
        op = draw(st.sampled_from(["delete", "copy", "move", "rename", "attribute", "text"]))
        parent = element.getparent()
        if op == "delete" and parent is not None:
            parent.remove(element)
        elif op == "copy" and parent is not None:
            parent.insert(parent.index(element), deepcopy(element))
        elif op == "move" and parent is not None:
            destination = draw(st.sampled_from(elements))
            if destination is not element and element not in destination.iterancestors():
                destination.append(element)
        elif op == "rename":
            element.tag = draw(st.sampled_from(elements)).tag
        elif op == "attribute":
            element.set(draw(st.sampled_from(JUNK_ATTRIBUTES)), draw(st.sampled_from(JUNK_VALUES)))
        else:
            element.text = draw(st.sampled_from(JUNK_VALUES))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def json_paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value."""
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += json_paths(item, (*path, index))
    return paths


class Target:
    """A sent referral to post consults to; replaced after a consult is accepted (a referral takes only one)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.renew()

    def renew(self) -> None:
        self.referral_id, self.packet = sent_referral(self.client, "so-ms-patient")  # the smallest record
        self._seeds: dict[str, bytes] = {}

    def seed(self, fmt: str) -> bytes:
        """The fixture consultant's answer to this referral, in one format (made when first needed)."""
        if fmt not in self._seeds:
            now = datetime.now(UTC)
            self._seeds[fmt] = {"fhir-json": lambda: consult_for_packet(self.packet, now=now).model_dump_json().encode(),
                                "fhir-xml": lambda: consult_xml_for_packet(self.packet, now=now),
                                "ccda": lambda: ccda_consult_for_packet(self.packet, now=now, refute=True)}[fmt]()
        return self._seeds[fmt]

    def post(self, body: bytes, content_type: str) -> None:
        """Post a consult and check the answer and what was stored."""
        resp = self.client.post(f"/api/referrals/{self.referral_id}/consult", data=body,
                                headers={"Content-Type": content_type})
        assert resp.status_code < 500, resp.get_data(as_text=True)[:1000]
        event(f"HTTP {resp.status_code}")
        if resp.status_code == 202:
            assert resp.get_json()["concordance"]["confirmed"] is not None
            self.renew()
            return
        assert_outcome_body(resp)
        referral = self.client.get(f"/api/referrals/{self.referral_id}").get_json()
        assert referral["status"] == "requested" and "consult" not in referral
        assert get_repository(self.app).find_consult(self.referral_id) is None


def assert_outcome_body(resp) -> None:  # noqa: ANN001
    assert resp.status_code >= 400
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] and outcome["issue"][0]["diagnostics"]
    assert "Traceback" not in resp.get_data(as_text=True)


@pytest.fixture
def target(make_app) -> Target:  # noqa: ANN001
    return Target(make_app(worker=False, WRITEBACK="off"))


@FUZZ
@given(body=random_bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_random_consult_bodies_are_refused_cleanly(target: Target, body: bytes, content_type: str) -> None:
    target.post(body, content_type)


@settings(FUZZ, max_examples=100)
@given(data=st.data(), fmt=st.sampled_from(["fhir-json", "fhir-xml", "ccda"]),
       content_type=st.sampled_from([FHIR_JSON, FHIR_XML, CDA_XML, "application/xml"]))
def test_mutated_consults_never_fail_the_server(target: Target, data: st.DataObject, fmt: str,
                                                content_type: str) -> None:
    target.post(data.draw(mutations(target.seed(fmt))), content_type)


@settings(FUZZ, max_examples=120)
@given(data=st.data(), fmt=st.sampled_from(["fhir-xml", "ccda"]))
def test_xml_consults_with_elements_changed_never_fail_the_server(target: Target, data: st.DataObject,
                                                                 fmt: str) -> None:
    content_type = FHIR_XML if fmt == "fhir-xml" else data.draw(st.sampled_from([CDA_XML, "text/xml"]))
    target.post(data.draw(tree_mutations(target.seed(fmt))), content_type)


@settings(FUZZ, max_examples=200)
@given(data=st.data(), junk=json_values)
def test_consults_with_a_field_replaced_by_junk_never_fail_the_server(target: Target, data: st.DataObject,
                                                                      junk: object) -> None:
    consult = json.loads(target.seed("fhir-json"))
    path = data.draw(st.sampled_from(json_paths(consult)[1:]))
    holder = consult
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = junk
    target.post(json.dumps(consult).encode(), FHIR_JSON)


def referral_count(app: Flask) -> int:
    with Session(get_repository(app).engine) as session:
        return session.scalar(select(func.count()).select_from(ReferralRow))


referral_fields = st.fixed_dictionaries({}, optional={
    "patient": st.sampled_from(["so-ms-patient", "no-such-patient", "", "a b", "x" * 65, "../etc"]) | json_values,
    "question": st.text(max_size=30) | json_values,
    "patient_questions": st.lists(st.text(max_size=10), max_size=3) | json_values,
    "exclude": st.lists(st.sampled_from(["Condition/so-ms-cond-paresthesia", "nope", "Condition/"]), max_size=2)
    | json_values,
    "since": st.sampled_from(["2020-01-01", "2020-13-01", "yesterday"]) | json_values,
    "extra": json_values,
})


@pytest.fixture
def quiet_app(make_app) -> Flask:  # noqa: ANN001
    return make_app(worker=False, WRITEBACK="off")


@settings(FUZZ, max_examples=100)
@given(body=st.builds(lambda d: json.dumps(d).encode(), referral_fields) | random_bodies,
       content_type=st.sampled_from(["application/json", FHIR_JSON, "text/plain", ""]))
def test_referral_requests_are_refused_cleanly_and_store_nothing(quiet_app: Flask, body: bytes,
                                                                 content_type: str) -> None:
    before = referral_count(quiet_app)
    client = quiet_app.test_client()
    resp = client.post("/api/referrals", data=body, headers={"Content-Type": content_type})
    assert resp.status_code < 500, resp.get_data(as_text=True)[:1000]
    event(f"HTTP {resp.status_code}")
    if resp.status_code == 201:
        assert referral_count(quiet_app) == before + 1
        assert Bundle.model_validate(client.get(f"/api/referrals/{resp.get_json()['id']}/packet").get_json())
    else:
        assert_outcome_body(resp)
        assert referral_count(quiet_app) == before
