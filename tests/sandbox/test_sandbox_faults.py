"""Fault injection: injected statuses, Retry-After, durations, filters and hangs, without touching the store."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests


def add_fault(fhir: Any, **spec: Any) -> requests.Response:
    """Activate a fault on the sandbox."""
    return fhir.session.post(f"{fhir.server.root_url}/_sandbox/faults", json=spec, timeout=10)


def test_count_fault_answers_the_next_n_requests_then_clears(fhir: Any) -> None:
    created = add_fault(fhir, status=503, count=2)
    assert created.status_code == 201
    assert created.json()["count"] == 2
    statuses = [fhir.get("metadata").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert fhir.session.get(f"{fhir.server.root_url}/_sandbox/faults", timeout=10).json() == []


def test_throttling_fault_sends_retry_after_and_code_throttled(fhir: Any) -> None:
    add_fault(fhir, status=429, count=1, retry_after=7)
    response = fhir.get("Patient")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert fhir.outcome_codes(response) == ["throttled"]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_faults_are_transient_outcomes(fhir: Any, status: int) -> None:
    add_fault(fhir, status=status, count=1)
    response = fhir.get("Patient")
    assert response.status_code == status
    assert fhir.outcome_codes(response) == ["transient"]
    assert "Retry-After" not in response.headers


def test_duration_fault_lasts_for_its_duration(fhir: Any) -> None:
    add_fault(fhir, status=503, duration_s=0.4)
    assert [fhir.get("Patient").status_code for _ in range(3)] == [503, 503, 503]
    time.sleep(0.5)
    assert fhir.get("Patient").status_code == 200


def test_fault_filters_by_method_and_path(fhir: Any) -> None:
    add_fault(fhir, status=500, methods=["post"], path_contains="Observation")
    assert fhir.get("Observation").status_code == 200
    assert fhir.post("Patient", {"resourceType": "Patient"}).status_code == 201
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    assert fhir.post("Observation", observation).status_code == 500
    assert fhir.server.store.count("Observation") == 0


def test_rate_zero_never_fires_and_delete_clears_faults(fhir: Any) -> None:
    add_fault(fhir, status=503, rate=0)
    assert fhir.get("Patient").status_code == 200
    add_fault(fhir, status=503)
    assert fhir.get("Patient").status_code == 503
    assert fhir.session.delete(f"{fhir.server.root_url}/_sandbox/faults", timeout=10).status_code == 204
    assert fhir.get("Patient").status_code == 200


def test_one_fault_can_be_removed_by_id(fhir: Any) -> None:
    fault_id = add_fault(fhir, status=503).json()["id"]
    assert fhir.session.delete(f"{fhir.server.root_url}/_sandbox/faults/{fault_id}", timeout=10).status_code == 204
    assert fhir.get("Patient").status_code == 200
    assert fhir.session.delete(f"{fhir.server.root_url}/_sandbox/faults/{fault_id}", timeout=10).status_code == 404


def test_faults_leave_the_store_untouched(fhir: Any) -> None:
    add_fault(fhir, status=503, count=1)
    response = fhir.post("Patient", {"resourceType": "Patient"})
    assert response.status_code == 503
    assert fhir.server.store.count("Patient") == 0
    assert fhir.server.requests[-1]["status"] == 503


def test_hang_fault_makes_a_client_time_out_then_answers_normally(fhir: Any) -> None:
    add_fault(fhir, mode="hang", delay_s=1.0, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        fhir.get("metadata", timeout=0.2)
    started = time.perf_counter()
    assert fhir.get("metadata", timeout=5).status_code == 200
    assert time.perf_counter() - started < 0.5


def test_hang_fault_delays_then_serves_the_real_answer(fhir: Any) -> None:
    add_fault(fhir, mode="hang", delay_s=0.3, count=1)
    started = time.perf_counter()
    response = fhir.post("Patient", {"resourceType": "Patient"})
    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 201


@pytest.mark.parametrize("spec", [
    {"count": 1},
    {"status": 200},
    {"status": 503, "count": 0},
    {"status": 503, "rate": 2},
    {"status": 503, "retry_after": "soon"},
    {"status": 503, "colour": "red"},
    {"mode": "hang"},
    {"mode": "hang", "delay_s": 1, "status": 503},
    {"mode": "explode", "status": 503},
], ids=["no-status", "not-an-error", "zero-count", "bad-rate", "bad-retry-after", "unknown-field", "hang-without-delay",
        "hang-with-status", "unknown-mode"])
def test_invalid_fault_specs_are_refused(fhir: Any, spec: dict[str, Any]) -> None:
    response = add_fault(fhir, **spec)
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["invalid"]
    assert fhir.session.get(f"{fhir.server.root_url}/_sandbox/faults", timeout=10).json() == []
