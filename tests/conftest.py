"""Shared test fixtures: the sandbox EHR on a free 127.0.0.1 port, the app, and helpers."""

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.queue import start_consumer, stop_consumer
from service.store.repository import get_repository

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
SYNTHEA_FILES = sorted((CORPUS / "fhir-patients").glob("*.json"))
FIXTURE_PATIENTS = ROOT / "fixtures" / "patients"


@pytest.fixture(scope="session")
def ehr() -> Iterator["SandboxServer"]:  # noqa: F821
    """The sandbox EHR with the fixture patients, one per test session."""
    from fixtures.sandbox import SandboxServer

    with SandboxServer() as server:
        yield server


@pytest.fixture
def make_app(tmp_path: Path, ehr) -> Iterator[Callable[..., Flask]]:  # noqa: ANN001
    """A factory of apps pointed at the sandbox (or another EHR), each with its own SQLite file and queue.

    Each app runs the real write-back consumer in-process (worker=False for the web side alone).
    """
    apps: list[Flask] = []

    def factory(*, worker: bool = True, **overrides: object) -> Flask:
        config = {"TESTING": True, "FHIR_BASE_URL": ehr.base_url, "FHIR_BACKOFF": 0.05,
                  "WRITEBACK_BASE_DELAY_S": 0.05, "WRITEBACK_MAX_DELAY_S": 1.0, "WRITEBACK_LEASE_S": 5.0,
                  "WRITEBACK_SWEEP_S": 1.0, "QUEUE_POLL_S": 0.05,
                  "DATABASE_URL": f"sqlite:///{tmp_path / f'db{len(apps)}.sqlite3'}", **overrides}
        app = create_app(config)
        apps.append(app)
        if worker:
            start_consumer(app)
        return app

    yield factory
    for app in apps:
        stop_consumer(app)
        get_repository(app).engine.dispose()


@pytest.fixture
def app(make_app) -> Flask:  # noqa: ANN001
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# The gaps each fixture patient was built with (fixtures/patients/README.md, completeness matrix):
# (readiness item, what it is about) per patient; the complete patient has none.
READINESS_GAPS: dict[str, set[tuple[str, str | None]]] = {
    "so-prostate-patient": set(),
    "so-breast-patient": {("operative-note", "Procedure/so-breast-proc-lumpectomy"),
                          ("operative-note", "Procedure/so-breast-proc-sentinel-node")},
    "so-ms-patient": {("discharge-summary", "Encounter/so-ms-enc-inpatient"), ("care-plan", None)},
    "so-cad-patient": {("pathology-report", "Condition/so-cad-cond-colon-cancer"),
                       ("medication-dosage", "MedicationStatement/so-cad-nitroglycerin-statement"),
                       ("medication-dosage", "MedicationRequest/so-cad-nitroglycerin-request")},
}


def closed_port_url() -> str:
    """A FHIR base on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/fhir"


@pytest.fixture
def loopback_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on 127.0.0.1 that records every connection it receives (there must be none)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    received: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    received.append(conn.recv(1024) or b"<connected>")
                except OSError:
                    received.append(b"<connected>")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join(timeout=2)
    server.close()


def fixture_questions() -> dict:
    return json.loads((FIXTURE_PATIENTS / "questions.json").read_text("utf-8"))


def wait_for_status(client: FlaskClient, referral_id: str, statuses: tuple[str, ...] = ("completed", "failed"),
                    timeout_s: float = 30.0) -> dict:
    """Poll the referral until it reaches one of statuses (or fail the test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/api/referrals/{referral_id}").get_json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"referral stayed {body['status']} for {timeout_s} s: {body.get('writeback')}")
        time.sleep(0.05)


def assert_outcome(resp, status: int, code: str | None = None) -> dict:  # noqa: ANN001
    """The response (Flask test client's or requests') is an OperationOutcome with this status (and issue code)."""
    text = resp.get_data(as_text=True) if hasattr(resp, "get_data") else resp.text
    assert resp.status_code == status, text[:500]
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    body = json.loads(text)
    assert body["resourceType"] == "OperationOutcome"
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body
