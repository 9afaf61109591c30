"""The write-back DocumentReference (US Core, clinical-note) and the XHTML rendition of a consult."""

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.identifier import Identifier
from lxml import etree

from mappers.consult import build_consult_bundle
from mappers.consult_context import ConsultContext
from mappers.docref import build_document_reference, render_consult_xhtml
from mappers.errors import MappingError
from mappers.ids import sequential_ids
from mappers.narrative import XHTML_NS

BARE = Path(__file__).resolve().parent / "data" / "consult-composition-contained.json"
IDENTIFIER = Identifier(system="urn:ietf:rfc:3986", value="urn:uuid:7d0c1b0e-1111-4000-8000-000000000001")
SCRIPT_DIV = ('<div xmlns="http://www.w3.org/1999/xhtml"><p onmouseover="steal()">Plan &amp; follow-up</p>'
              '<script>steal()</script><img src="https://tracker.example/p.gif"/></div>')


@pytest.fixture
def consult(consult_context: ConsultContext, now: datetime) -> Bundle:
    """Our consult document made from the bare Composition fixture."""
    source = Composition.model_validate_json(BARE.read_text(encoding="utf-8"))
    return build_consult_bundle(source, consult_context, now=now, new_id=sequential_ids())


def docref(consult: Bundle, now: datetime, **changes: object) -> DocumentReference:
    """The DocumentReference for consult, with its JSON and (by default) an XHTML rendition."""
    fields: dict = {"patient_ref": "Patient/ehr-patient-1", "service_request_ref": "ServiceRequest/sr-1",
                    "identifier": IDENTIFIER, "now": now, "xhtml": render_consult_xhtml(consult), **changes}
    return build_document_reference(consult, consult.model_dump_json().encode("utf-8"), **fields)


def test_document_reference_has_what_us_core_requires(consult: Bundle, now: datetime) -> None:
    ref = docref(consult, now)
    assert (ref.status, ref.docStatus, ref.date) == ("current", "final", now)
    assert ref.type.coding[0].model_dump(exclude_none=True) == {
        "system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
    assert ref.category[0].coding[0].model_dump(exclude_none=True) == {
        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
        "code": "clinical-note", "display": "Clinical Note"}
    assert ref.subject.reference == "Patient/ehr-patient-1"
    assert ref.identifier == [IDENTIFIER] and ref.masterIdentifier == consult.identifier
    assert [r.reference for r in ref.context.related] == ["ServiceRequest/sr-1"]
    assert ref.description == "Rheumatology second opinion"
    DocumentReference.model_validate(ref.model_dump())


def test_authors_are_display_only_names(consult: Bundle, now: datetime) -> None:
    assert [a.model_dump(exclude_none=True) for a in docref(consult, now).author] == [{"display": "Dr Grace Hopper"}]


def test_the_fhir_document_is_attached_with_size_and_sha1(consult: Bundle, now: datetime) -> None:
    document = consult.model_dump_json().encode("utf-8")
    attachment = docref(consult, now).content[0].attachment
    assert attachment.contentType == "application/fhir+json"
    assert attachment.data == document
    assert attachment.size == len(document)
    assert attachment.hash == hashlib.sha1(document).digest()  # noqa: S324 - FHIR Attachment.hash is SHA-1
    assert attachment.title == "Rheumatology second opinion"
    dumped = json.loads(docref(consult, now).model_dump_json())["content"][0]["attachment"]
    assert base64.b64decode(dumped["data"]) == document
    assert dumped["creation"] == "2024-05-30T16:00:00+02:00"


def test_the_xhtml_rendition_is_a_second_attachment_with_a_charset(consult: Bundle, now: datetime) -> None:
    first, second = docref(consult, now).content
    assert second.attachment.contentType == "application/xhtml+xml;charset=utf-8"
    assert second.attachment.data == render_consult_xhtml(consult).encode("utf-8")
    assert first.format.code == second.format.code == "urn:ihe:iti:xds:2017:mimeTypeSufficient"


def test_without_a_rendition_or_an_order_those_parts_are_left_out(consult: Bundle, now: datetime) -> None:
    ref = docref(consult, now, xhtml=None, service_request_ref=None)
    assert len(ref.content) == 1 and ref.context is None


def test_a_preliminary_consult_gives_a_preliminary_doc_status(consult: Bundle, now: datetime) -> None:
    consult.entry[0].resource.status = "preliminary"
    assert docref(consult, now).docStatus == "preliminary"


def test_a_bundle_that_is_not_a_document_is_refused(now: datetime) -> None:
    with pytest.raises(MappingError, match=r"Bundle.entry\[0\] is not a Composition"):
        docref(Bundle(type="document"), now, xhtml=None)


def test_rendition_has_title_patient_author_date_and_every_section(consult: Bundle) -> None:
    html = etree.fromstring(render_consult_xhtml(consult).encode("utf-8"))
    ns = {"h": XHTML_NS}
    assert html.findtext("h:head/h:title", namespaces=ns) == "Rheumatology second opinion"
    lines = ["".join(p.itertext()) for p in html.findall("h:body/h:p", ns)]
    assert lines == ["Patient: Myra Jones", "Author: Dr Grace Hopper", "Date: 2024-05-30 16:00 +02:00"]
    assert [h.text for h in html.findall("h:body/h:h2", ns)] == ["Assessment", "Recommendations"]
    assert "The diagnosis of SLE is confirmed." in "".join(html.itertext())


def test_rendition_strips_scripts_events_and_remote_images_and_escapes_text(consult: Bundle) -> None:
    doc = consult.entry[0].resource
    doc.title = "<b>Second</b> opinion & more"
    doc.section[1].text.div = SCRIPT_DIV
    rendered = render_consult_xhtml(consult)
    assert "<script" not in rendered and "onmouseover" not in rendered and "tracker" not in rendered
    assert "&lt;b&gt;Second&lt;/b&gt; opinion &amp; more" in rendered
    assert "Plan &amp; follow-up" in rendered
    assert rendered.startswith('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n')
    etree.fromstring(rendered.encode("utf-8"))
