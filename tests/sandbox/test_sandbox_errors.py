"""Every error is an OperationOutcome; content types; latency; the request log; no PHI in logs."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from fixtures.sandbox import SandboxServer, create_sandbox_app


def test_malformed_json_is_a_400_outcome(fhir: Any) -> None:
    response = fhir.post("Patient", b'{"resourceType": "Patient",')
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["invalid"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/fhir+xml", None])
def test_non_json_content_types_are_a_415_outcome(fhir: Any, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = b'{"resourceType": "Patient"}'
    response = fhir.session.post(f"{fhir.base}/Patient", data=body, headers=headers, timeout=10)
    assert response.status_code == 415
    assert fhir.outcome_codes(response) == ["not-supported"]


@pytest.mark.parametrize("content_type", [
    "application/json", "application/fhir+json; charset=utf-8", "application/json;charset=UTF-8",
])
def test_json_content_types_are_accepted(fhir: Any, content_type: str) -> None:
    response = fhir.post("Patient", {"resourceType": "Patient"}, headers={"Content-Type": content_type})
    assert response.status_code == 201


def test_invalid_resource_is_a_400_naming_the_failing_path(fhir: Any) -> None:
    response = fhir.post("Patient", {"resourceType": "Patient", "name": [{"given": "Ann"}], "birthDate": "soon"})
    assert response.status_code == 400
    issues = response.json()["issue"]
    assert {issue["code"] for issue in issues} == {"invalid"}
    assert {issue["expression"][0] for issue in issues} == {"Patient.name[0].given", "Patient.birthDate"}
    assert fhir.server.store.count("Patient") == 0


def test_resource_type_must_match_the_url(fhir: Any) -> None:
    response = fhir.post("Patient", {"resourceType": "Practitioner"})
    assert response.status_code == 400
    assert "Practitioner" in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "Nonsense", 404, "not-supported"),
    ("GET", "Nonsense/1", 404, "not-supported"),
    ("GET", "Resource/1", 404, "not-supported"),
    ("GET", "Patient/missing", 404, "not-found"),
    ("GET", "Patient/bad_id!", 400, "invalid"),
    ("GET", "Patient/1/_history", 404, "not-found"),
    ("PATCH", "Patient/1", 405, "not-supported"),
    ("DELETE", "Patient", 405, "not-supported"),
    ("GET", "", 405, "not-supported"),
])
def test_routing_errors_are_outcomes(fhir: Any, method: str, path: str, status: int, code: str) -> None:
    url = f"{fhir.base}/{path}".rstrip("/")
    response = fhir.session.request(method, url, headers={"Accept": "application/fhir+json"}, timeout=10)
    assert response.status_code == status
    assert fhir.outcome_codes(response) == [code]


def test_method_not_allowed_names_the_allowed_methods(fhir: Any) -> None:
    response = fhir.session.patch(f"{fhir.base}/Patient/1", timeout=10)
    assert "PUT" in response.headers["Allow"]


@pytest.mark.parametrize("params, headers", [({"_format": "xml"}, {}), ({}, {"Accept": "application/fhir+xml"})])
def test_xml_only_requests_are_not_acceptable(fhir: Any, params: dict[str, str], headers: dict[str, str]) -> None:
    response = fhir.session.get(f"{fhir.base}/metadata", params=params, headers=headers, timeout=10)
    assert response.status_code == 406
    assert fhir.outcome_codes(response) == ["not-supported"]


def test_health_answers_ok(fhir: Any) -> None:
    response = fhir.session.get(f"{fhir.server.root_url}/_sandbox/health", timeout=10)
    assert response.json() == {"status": "ok"}


def test_request_log_records_fhir_requests_with_lower_cased_headers(fhir: Any) -> None:
    fhir.get("Observation", params=[("patient", "p1"), ("date", "ge2024"), ("date", "le2025")],
             headers={"Authorization": "Bearer synthetic-token", "X-Custom": "1"})
    logged = fhir.session.get(f"{fhir.server.root_url}/_sandbox/requests", timeout=10).json()
    assert logged == fhir.server.requests
    (entry,) = logged
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/fhir/Observation", 200)
    assert entry["query"] == {"patient": "p1", "date": ["ge2024", "le2025"]}
    assert entry["headers"]["authorization"] == "Bearer synthetic-token"
    assert entry["headers"]["x-custom"] == "1"
    assert fhir.session.delete(f"{fhir.server.root_url}/_sandbox/requests", timeout=10).status_code == 204
    assert fhir.server.requests == []


def test_log_lines_carry_no_query_values(fhir: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="fixtures.sandbox"):
        fhir.get("Patient", params={"family": "Secretname", "identifier": "MRN-SECRET"})
    assert "GET /fhir/Patient 200" in caplog.text
    assert "Secret" not in caplog.text and "SECRET" not in caplog.text


def test_latency_option_delays_every_fhir_answer(make_fhir: Any) -> None:
    with SandboxServer(load_fixtures=False, latency_ms=150) as server:
        fhir = make_fhir(server)
        started = time.perf_counter()
        assert fhir.get("metadata").status_code == 200
        assert time.perf_counter() - started >= 0.15
        started = time.perf_counter()
        assert fhir.session.get(f"{server.root_url}/_sandbox/health", timeout=10).status_code == 200
        assert time.perf_counter() - started < 0.15


@pytest.mark.parametrize("options", [{"page_size": 0}, {"max_page_size": 0}, {"latency_ms": -1}])
def test_bad_options_are_refused(options: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        create_sandbox_app(load_fixtures=False, **options)
