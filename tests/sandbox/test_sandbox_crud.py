"""Create, read, update, vread and delete, conditional create, and what a write must look like."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

DOC_ID_SYSTEM = "urn:ietf:rfc:3986"


def document_reference(identifier: str, subject: str = "Patient/p1") -> dict[str, Any]:
    """A minimal DocumentReference with one identifier."""
    return {
        "resourceType": "DocumentReference", "status": "current",
        "identifier": [{"system": DOC_ID_SYSTEM, "value": identifier}],
        "subject": {"reference": subject},
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8", "data": "c3ludGhldGlj"}}],
    }


def patient(family: str = "Example") -> dict[str, Any]:
    """A synthetic patient."""
    return {"resourceType": "Patient", "name": [{"family": family}], "gender": "unknown"}


def test_create_assigns_id_version_and_location(fhir: Any) -> None:
    response = fhir.post("Patient", {**patient(), "id": "client-chosen"})
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"]
    assert response.headers["Location"] == f"{fhir.base}/Patient/{body['id']}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'
    assert fhir.server.store.get("Patient", body["id"])["name"] == [{"family": "Example"}]


def test_read_returns_the_resource_with_etag_and_last_modified(fhir: Any) -> None:
    created = fhir.post("Patient", patient()).json()
    response = fhir.get(f"Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["ETag"] == 'W/"1"'
    assert parsedate_to_datetime(response.headers["Last-Modified"]).year >= 2024


def test_update_increments_the_version_and_vread_returns_each_version(fhir: Any) -> None:
    created = fhir.post("Patient", patient("First")).json()
    updated = fhir.put(f"Patient/{created['id']}", {**patient("Second"), "id": created["id"]})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["ETag"] == 'W/"2"'
    assert fhir.get(f"Patient/{created['id']}").json()["name"] == [{"family": "Second"}]
    assert fhir.get(f"Patient/{created['id']}/_history/1").json()["name"] == [{"family": "First"}]
    assert fhir.get(f"Patient/{created['id']}/_history/2").json()["name"] == [{"family": "Second"}]
    missing = fhir.get(f"Patient/{created['id']}/_history/3")
    assert missing.status_code == 404
    assert fhir.outcome_codes(missing) == ["not-found"]


def test_put_with_a_new_id_creates_the_resource(fhir: Any) -> None:
    response = fhir.put("Patient/chosen-by-client", {**patient(), "id": "chosen-by-client"})
    assert response.status_code == 201
    assert response.headers["Location"] == f"{fhir.base}/Patient/chosen-by-client/_history/1"
    assert fhir.get("Patient/chosen-by-client").status_code == 200


@pytest.mark.parametrize("body_id", ["other", None], ids=["different", "missing"])
def test_put_body_id_must_match_the_url(fhir: Any, body_id: str | None) -> None:
    resource = patient() if body_id is None else {**patient(), "id": body_id}
    response = fhir.put("Patient/expected", resource)
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["invalid"]
    assert fhir.server.store.get("Patient", "expected") is None


def test_put_with_a_stale_if_match_is_refused(fhir: Any) -> None:
    created = fhir.post("Patient", patient()).json()
    body = {**patient("Changed"), "id": created["id"]}
    assert fhir.put(f"Patient/{created['id']}", body, headers={"If-Match": 'W/"1"'}).status_code == 200
    stale = fhir.put(f"Patient/{created['id']}", body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert fhir.outcome_codes(stale) == ["conflict"]


def test_delete_answers_204_then_reads_are_gone(fhir: Any) -> None:
    created = fhir.post("Patient", patient()).json()
    assert fhir.delete(f"Patient/{created['id']}").status_code == 204
    gone = fhir.get(f"Patient/{created['id']}")
    assert gone.status_code == 410
    assert fhir.outcome_codes(gone) == ["deleted"]
    assert fhir.get(f"Patient/{created['id']}/_history/1").status_code == 200
    assert fhir.get("Patient", params={"_id": created["id"]}).json()["total"] == 0
    assert fhir.server.store.count("Patient") == 0
    assert fhir.delete(f"Patient/{created['id']}").status_code == 204
    assert fhir.delete("Patient/never-existed").status_code == 404


def test_put_after_delete_recreates_with_the_next_version(fhir: Any) -> None:
    fhir.put("Patient/again", {**patient(), "id": "again"})
    fhir.delete("Patient/again")
    response = fhir.put("Patient/again", {**patient(), "id": "again"})
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "3"


def test_conditional_create_with_no_match_creates(fhir: Any) -> None:
    header = {"If-None-Exist": f"identifier={DOC_ID_SYSTEM}|urn:uuid:0001"}
    response = fhir.post("DocumentReference", document_reference("urn:uuid:0001"), headers=header)
    assert response.status_code == 201
    assert fhir.server.store.count("DocumentReference") == 1


def test_conditional_create_with_one_match_returns_it_and_creates_nothing(fhir: Any) -> None:
    first = fhir.post("DocumentReference", document_reference("urn:uuid:0002")).json()
    header = {"If-None-Exist": f"identifier={DOC_ID_SYSTEM}|urn:uuid:0002"}
    response = fhir.post("DocumentReference", document_reference("urn:uuid:0002"), headers=header)
    assert response.status_code == 200
    assert response.json()["id"] == first["id"]
    assert response.headers["Location"] == f"{fhir.base}/DocumentReference/{first['id']}/_history/1"
    assert fhir.server.store.count("DocumentReference") == 1


def test_conditional_create_with_several_matches_is_a_412(fhir: Any) -> None:
    fhir.post("DocumentReference", document_reference("urn:uuid:0003"))
    fhir.post("DocumentReference", document_reference("urn:uuid:0003"))
    header = {"If-None-Exist": f"identifier={DOC_ID_SYSTEM}|urn:uuid:0003"}
    response = fhir.post("DocumentReference", document_reference("urn:uuid:0003"), headers=header)
    assert response.status_code == 412
    assert fhir.outcome_codes(response) == ["multiple-matches"]
    assert fhir.server.store.count("DocumentReference") == 2


def test_conditional_create_with_an_unknown_parameter_is_refused(fhir: Any) -> None:
    response = fhir.post("Patient", patient(), headers={"If-None-Exist": "nonsense=1"})
    assert response.status_code == 400
    assert fhir.server.store.count("Patient") == 0


def test_decimals_and_timestamps_are_stored_exactly_as_sent(fhir: Any) -> None:
    raw = ('{"resourceType":"Observation","status":"final","code":{"text":"heart rate"},'
           '"effectiveDateTime":"2024-05-01T10:00:00.1+02:00","valueQuantity":{"value":72.50,"unit":"/min"}}')
    created = fhir.post("Observation", raw)
    assert created.status_code == 201
    text = fhir.get(f"Observation/{created.json()['id']}").text
    assert '"value":72.50' in text
    assert '"effectiveDateTime":"2024-05-01T10:00:00.1+02:00"' in text


def test_prefer_return_minimal_answers_without_a_body(fhir: Any) -> None:
    response = fhir.post("Patient", patient(), headers={"Prefer": "return=minimal"})
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["Location"].startswith(f"{fhir.base}/Patient/")


def test_document_bundle_is_stored_as_a_bundle_resource(fhir: Any) -> None:
    document = {
        "resourceType": "Bundle", "type": "document", "identifier": {"system": DOC_ID_SYSTEM, "value": "urn:uuid:d0c"},
        "timestamp": "2024-06-01T10:00:00Z",
        "entry": [{"fullUrl": "urn:uuid:c0", "resource": {
            "resourceType": "Composition", "status": "final", "title": "Consult note",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
            "subject": {"reference": "Patient/p1"}, "date": "2024-06-01T10:00:00Z",
            "author": [{"display": "Consultant"}],
        }}],
    }
    response = fhir.post("Bundle", document)
    assert response.status_code == 201
    stored = fhir.server.store.get("Bundle", response.json()["id"])
    assert stored["entry"][0]["fullUrl"] == "urn:uuid:c0"  # a document keeps its own references
    query = {"identifier": f"{DOC_ID_SYSTEM}|urn:uuid:d0c", "type": "document", "patient": "p1"}
    found = fhir.get("Bundle", params=query)
    assert found.json()["total"] == 1


def test_written_resources_keep_their_own_meta_tags(fhir: Any) -> None:
    tag = {"system": "https://example.org/tags", "code": "synthetic"}
    tagged = {**patient(), "meta": {"tag": [tag], "versionId": "99"}}
    body = fhir.post("Patient", json.dumps(tagged)).json()
    assert body["meta"]["tag"] == tagged["meta"]["tag"]
    assert body["meta"]["versionId"] == "1"


def test_concurrent_creates_all_land_with_distinct_ids(fhir: Any) -> None:
    def create_some(_: int) -> list[str]:
        with requests.Session() as session:
            return [session.post(f"{fhir.base}/Patient", json=patient(), timeout=30).json()["id"] for _ in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [resource_id for batch in pool.map(create_some, range(8)) for resource_id in batch]
    assert len(set(ids)) == 80
    assert fhir.server.store.count("Patient") == 80


def test_concurrent_conditional_creates_make_exactly_one_resource(fhir: Any) -> None:
    header = {"If-None-Exist": f"identifier={DOC_ID_SYSTEM}|urn:uuid:0004", "Content-Type": "application/fhir+json"}

    def create_once(_: int) -> int:
        with requests.Session() as session:
            body = json.dumps(document_reference("urn:uuid:0004"))
            return session.post(f"{fhir.base}/DocumentReference", data=body, headers=header, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(create_once, range(16)))
    assert statuses == [200] * 15 + [201]
    assert fhir.server.store.count("DocumentReference") == 1


def test_searches_and_their_later_pages_see_every_write_since_they_were_last_answered(fhir: Any) -> None:
    """A search's matches are kept for its later pages (and the same search again) only until the store changes."""
    first = [fhir.post("DocumentReference", document_reference(f"urn:uuid:{n:032x}", "Patient/p9")).json()["id"]
             for n in range(3)]
    page = fhir.get("DocumentReference", params={"patient": "p9", "_count": 2}).json()
    assert page["total"] == 3 and [e["resource"]["id"] for e in page["entry"]] == first[:2]
    later = fhir.post("DocumentReference", document_reference("urn:uuid:" + "f" * 32, "Patient/p9")).json()["id"]
    fhir.delete(f"DocumentReference/{first[0]}")
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = fhir.get(next_url).json()  # the next page of the answer above, asked for after two writes
    assert second["total"] == 3 and [e["resource"]["id"] for e in second["entry"]] == [later]
    again = fhir.get("DocumentReference", params={"patient": "p9", "_count": 2}).json()
    assert again["total"] == 3 and [e["resource"]["id"] for e in again["entry"]] == first[1:]
