"""Write-back profiles: what each writes, checked against the strict cerner sandbox and against sekmet-fhir."""

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.identifier import Identifier
from lxml import etree

from fixtures.sandbox import SandboxServer
from fixtures.sandbox.cerner_rules import check_cerner_document_reference
from mappers.docref import FHIR_JSON, XHTML_UTF8, build_document_reference, render_consult_xhtml
from service.store.repository import get_repository
from service.writeback_profiles import PROFILES, get_profile, shape_document_reference
from tests.conftest import FIXTURE_PATIENTS, fixture_questions
from tests.e2e.servers import FhirServer, SekmetProcess, require_sekmet
from tests.writeback.helpers import post_consult, request_count, sent_referral, wait_for_statuses

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def document_reference(ehr, tmp_path_factory: pytest.TempPathFactory) -> DocumentReference:  # noqa: ANN001
    """A DocumentReference with both attachments, built as receive_consult builds it, for a real consult document."""
    from service import create_app

    folder = tmp_path_factory.mktemp("profiles")
    app = create_app({"TESTING": True, "FHIR_BASE_URL": ehr.base_url, "WRITEBACK": "off",
                      "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}"})
    client = app.test_client()
    referral_id = sent_referral(client)
    assert post_consult(client, referral_id).status_code == 202
    document = client.get(f"/api/referrals/{referral_id}/consult").get_data()
    consult = Bundle.model_validate_json(document)
    get_repository(app).engine.dispose()
    return build_document_reference(consult, document, patient_ref="Patient/p", service_request_ref="ServiceRequest/s",
                                    identifier=Identifier(system="urn:ietf:rfc:3986", value="urn:uuid:x"), now=NOW,
                                    xhtml=render_consult_xhtml(consult))


def as_json(docref: DocumentReference) -> dict:
    return json.loads(docref.model_dump_json(exclude_none=True))


@pytest.mark.parametrize("name", ["document", "docref-only"])
def test_document_profiles_keep_the_fhir_document_and_an_xhtml_rendition(document_reference, name: str) -> None:  # noqa: ANN001
    shaped = shape_document_reference(document_reference, get_profile(name), now=NOW)
    assert [c.attachment.contentType for c in shaped.content] == [FHIR_JSON, XHTML_UTF8]
    xhtml = shaped.content[1].attachment.data.decode("utf-8")
    assert etree.fromstring(xhtml.encode("utf-8")).tag == "{http://www.w3.org/1999/xhtml}html"
    assert shaped.content[1].attachment.size == len(shaped.content[1].attachment.data)
    assert shaped.status == "current" and shaped.type.coding[0].code == "11488-4"


def test_the_cerner_profile_meets_every_cerner_rule(document_reference) -> None:  # noqa: ANN001
    assert len(check_cerner_document_reference(as_json(document_reference))) >= 2  # two attachments, no period
    shaped = shape_document_reference(document_reference, get_profile("cerner"), now=NOW)
    assert check_cerner_document_reference(as_json(shaped)) == []
    assert [c.attachment.contentType for c in shaped.content] == ["application/xhtml+xml;charset=utf-8"]
    assert shaped.docStatus == "final" and shaped.context.period.end is not None
    xhtml = shaped.content[0].attachment.data.decode("utf-8")
    assert "/>" not in xhtml.replace(" />", "")
    assert base64.b64decode(as_json(shaped)["content"][0]["attachment"]["data"]).decode("utf-8") == xhtml
    DocumentReference.model_validate(shaped.model_dump())


@pytest.mark.parametrize("change,problem", [
    (lambda d: d.update(docStatus="preliminary"), "docStatus"),
    (lambda d: d["context"]["period"].pop("end"), "period.end"),
    (lambda d: d["content"][0]["attachment"].update(creation="2026-03-01"), "creation"),
    (lambda d: d["content"][0]["attachment"].update(contentType="text/html"), "contentType"),
    (lambda d: d["content"][0]["attachment"].update(
        data=base64.b64encode(b'<html xmlns="http://www.w3.org/1999/xhtml"><body>a<br/>b</body></html>').decode()),
     "<br />"),
    (lambda d: d["content"][0]["attachment"].update(
        data=base64.b64encode(b'<html xmlns="http://www.w3.org/1999/xhtml"><script>x()</script></html>').decode()),
     "<script>"),
    (lambda d: d["content"][0]["attachment"].update(data=base64.b64encode(b"<html><p>open").decode()), "well-formed"),
    (lambda d: d["content"].append(d["content"][0]), "exactly one"),
], ids=["draft", "no-period-end", "date-without-time", "html", "br-without-space", "script", "not-xml",
        "two-attachments"])
def test_the_cerner_rules_name_each_breach(document_reference, change, problem: str) -> None:  # noqa: ANN001
    resource = as_json(shape_document_reference(document_reference, get_profile("cerner"), now=NOW))
    change(resource)
    problems = check_cerner_document_reference(resource)
    assert any(problem in p for p in problems), problems


def test_every_profile_is_data() -> None:
    assert set(PROFILES) == {"document", "docref-only", "cerner"}
    assert PROFILES["document"].consult_steps == ("bundle", "document_reference", "task", "provenance")
    assert "bundle" not in PROFILES["docref-only"].consult_steps
    assert PROFILES["cerner"].consult_steps == ("document_reference",) and not PROFILES["cerner"].task_writes


def test_cerner_profile_writes_are_accepted_by_the_strict_cerner_sandbox(make_app) -> None:  # noqa: ANN001
    with SandboxServer(profile="cerner") as cerner:
        document_app = make_app(FHIR_BASE_URL=cerner.base_url, WRITEBACK_PROFILE="document")
        client = document_app.test_client()
        refused = sent_referral(client)
        post_consult(client, refused)
        body = wait_for_statuses(client, [refused], ("failed",), timeout_s=30)[refused]
        assert "400" in body["status_reason"]  # strict mode: the document profile's DocumentReference is refused

        client = make_app(FHIR_BASE_URL=cerner.base_url, WRITEBACK_PROFILE="cerner").test_client()
        referral_id = sent_referral(client)
        assert post_consult(client, referral_id).status_code == 202
        done = wait_for_statuses(client, [referral_id], timeout_s=30)[referral_id]
        docref = cerner.store.get("DocumentReference", done["writeback"]["document_reference"].split("/")[1])
        assert check_cerner_document_reference(docref) == []
        assert len(docref["content"]) == 1
        assert request_count(cerner, "POST", "/fhir/Bundle") == 1  # only the refused document profile's


def test_docref_only_writes_no_bundle(sandbox, make_app) -> None:  # noqa: ANN001
    client = make_app(FHIR_BASE_URL=sandbox.base_url, WRITEBACK_PROFILE="docref-only").test_client()
    referral_id = sent_referral(client)
    post_consult(client, referral_id)
    done = wait_for_statuses(client, [referral_id])[referral_id]
    assert request_count(sandbox, "POST", "/fhir/Bundle") == 0
    docref = sandbox.store.get("DocumentReference", done["writeback"]["document_reference"].split("/")[1])
    assert [c["attachment"]["contentType"] for c in docref["content"]] == [FHIR_JSON, XHTML_UTF8]
    provenance = sandbox.store.get("Provenance", done["writeback"]["provenance"].split("/")[1])
    assert [t["reference"] for t in provenance["target"]] == [done["writeback"]["document_reference"]]


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    executable = require_sekmet()
    process = SekmetProcess(executable, Path(tmp_path_factory.mktemp("sekmet-writeback"))).start()
    server = FhirServer("sekmet", process.base_url)
    try:
        server.post_bundle(_fixture_bundle(sorted(fixture_questions())[0]))
        yield server
    finally:
        process.stop()


def _fixture_bundle(patient_id: str) -> bytes:
    for path in sorted(FIXTURE_PATIENTS.glob("*.json")):
        if path.name != "questions.json" and f'"id": "{patient_id}"' in path.read_text("utf-8"):
            return path.read_bytes()
    raise AssertionError(f"no fixture file holds Patient/{patient_id}")


def test_document_profile_writes_are_accepted_by_sekmet(sekmet: FhirServer, make_app) -> None:  # noqa: ANN001
    client = make_app(FHIR_BASE_URL=sekmet.base_url).test_client()
    referral_id = sent_referral(client)
    assert post_consult(client, referral_id).status_code == 202
    done = wait_for_statuses(client, [referral_id], timeout_s=60)[referral_id]
    writeback = done["writeback"]
    docref = sekmet.read(writeback["document_reference"])
    assert [c["attachment"]["contentType"] for c in docref["content"]] == [FHIR_JSON, XHTML_UTF8]
    assert sekmet.read(writeback["bundle"])["type"] == "document"
    provenance = sekmet.read(writeback["provenance"])
    assert {t["reference"] for t in provenance["target"]} == {writeback["document_reference"], writeback["bundle"]}
    assert provenance["agent"][0]["who"]["display"] and provenance["recorded"]
    task = sekmet.read(done["task"])
    assert task["status"] == "completed" and task["businessStatus"]["coding"][0]["code"] == "7.0"


def test_the_strict_cerner_sandbox_refuses_a_breach_with_an_outcome(document_reference) -> None:  # noqa: ANN001
    import requests

    with SandboxServer(profile="cerner") as cerner:
        resource = as_json(document_reference)  # two attachments, no context.period
        resource["subject"] = {"reference": f"Patient/{sorted(fixture_questions())[0]}"}
        resp = requests.post(f"{cerner.base_url}/DocumentReference", json=resource, timeout=30,
                             headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
        assert resp.status_code == 400
        outcome = resp.json()
        assert outcome["resourceType"] == "OperationOutcome" and "exactly one" in outcome["issue"][0]["diagnostics"]
        shaped = as_json(shape_document_reference(document_reference, get_profile("cerner"), now=NOW))
        shaped["subject"] = resource["subject"]
        accepted = requests.post(f"{cerner.base_url}/DocumentReference", json=shaped, timeout=30,
                                 headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
        assert accepted.status_code == 201, accepted.text[:300]
    with SandboxServer() as generic:  # the other profiles take what R4 allows
        assert requests.post(f"{generic.base_url}/DocumentReference", json=resource, timeout=30,
                             headers={"Content-Type": FHIR_JSON}).status_code == 201
