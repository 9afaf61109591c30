"""The `second-opinion` command as a user runs it: demo, serve (as a real process), errors."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from service.demo import run_referral
from tests.conftest import fixture_questions

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "service.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECOND_OPINION_")}
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_once_runs_the_loop_and_exits_0(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "demo", "--once"], cwd=tmp_path, env=clean_env(), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "referral status:    completed" in result.stdout
    assert "document reference: DocumentReference/" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_with_smart_launches_from_the_chart_and_writes_back_with_backend_services(tmp_path: Path) -> None:
    """The sandbox enforces SMART scopes: the launch's patient/ and user/ scopes for the referral, the backend
    client's system/ scopes for every write-back step (Provenance is a PUT, so it needs c and u)."""
    result = subprocess.run([*CLI, "demo", "--once", "--auth", "smart"], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "launched from the chart (EHR launch, PKCE)" in result.stdout
    assert "referral status:    completed" in result.stdout
    assert "Traceback" not in result.stderr and "refused" not in result.stderr


def test_serve_without_an_ehr_refuses_to_start_and_says_what_to_set(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "serve"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "SECOND_OPINION_FHIR_BASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_served_process_runs_the_whole_loop_against_the_sandbox(tmp_path: Path, ehr) -> None:  # noqa: ANN001
    port = free_port()
    env = clean_env(SECOND_OPINION_FHIR_BASE_URL=ehr.base_url,
                    SECOND_OPINION_DATABASE_URL=f"sqlite:///{tmp_path / 'served.sqlite3'}")
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{url}/health")
        patient = sorted(fixture_questions())[0]
        result = run_referral(url, patient, "Is surgery the right choice?", [], say=lambda _msg: None)
        assert result.referral["status"] == "completed"
        docref_id = result.document_reference.split("/")[1]
        assert ehr.store.get("DocumentReference", docref_id)["subject"]["reference"] == f"Patient/{patient}"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr


def _wait_up(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.1)


def test_check_reports_what_the_server_offers_and_exits_0(tmp_path: Path, ehr) -> None:  # noqa: ANN001
    result = subprocess.run([*CLI, "check", "--fhir", ehr.base_url], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "FHIR version:  4.0.1" in result.stdout
    assert "medications:   from MedicationStatement and MedicationRequest" in result.stdout
    assert "the service can work with this server" in result.stdout


def test_check_of_an_unreachable_server_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    from tests.conftest import closed_port_url

    result = subprocess.run([*CLI, "check", "--fhir", closed_port_url()], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "/metadata could not be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_packet_command_writes_a_valid_document(tmp_path: Path, ehr) -> None:  # noqa: ANN001
    from fhir.resources.R4B.bundle import Bundle

    from mappers.validation import check_document_bundle

    out = tmp_path / "packet.json"
    result = subprocess.run([*CLI, "packet", "--fhir", ehr.base_url, "--patient", "so-ms-patient", "-o", str(out)],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert check_document_bundle(Bundle.model_validate_json(out.read_text("utf-8"))) == []
    assert "fetched Condition page 1/1" in result.stderr  # plain progress lines off a terminal
    assert "readiness: missing: No current treatment plan" in result.stderr


def test_packet_command_writes_the_ehrs_json_as_the_service_does(tmp_path: Path) -> None:
    from fixtures.sandbox import SandboxServer

    body = ('{"resourceType":"Bundle","type":"transaction","entry":['
            '{"resource":{"resourceType":"Patient","id":"cli-dec"},"request":{"method":"PUT","url":"Patient/cli-dec"}},'
            '{"resource":{"resourceType":"MedicationRequest","status":"active","intent":"order",'
            '"subject":{"reference":"Patient/cli-dec"},"medicationCodeableConcept":{"text":"Drug"},'
            '"dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":2.50,"unit":"mg"}}]}]},'
            '"request":{"method":"POST","url":"MedicationRequest"}}]}')
    with SandboxServer(load_fixtures=False) as ehr:
        loaded = requests.post(ehr.base_url, data=body, headers={"Content-Type": "application/fhir+json"}, timeout=10)
        assert loaded.status_code == 200, loaded.text[:300]
        out = tmp_path / "packet.json"
        result = subprocess.run([*CLI, "packet", "--fhir", ehr.base_url, "--patient", "cli-dec", "-o", str(out)],
                                cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"doseQuantity":{"value":2.50,"unit":"mg"}' in out.read_text("utf-8")  # not the model's 2.5


def test_packet_command_for_an_unknown_patient_exits_1(tmp_path: Path, ehr) -> None:  # noqa: ANN001
    result = subprocess.run([*CLI, "packet", "--fhir", ehr.base_url, "--patient", "nobody"], cwd=tmp_path,
                            env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Patient/nobody" in result.stderr and "Traceback" not in result.stderr
