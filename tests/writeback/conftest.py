"""Write-back test fixtures: a database per test (SQLite and PostgreSQL), a private sandbox, referral helpers."""

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from fixtures.consultant import consult_for_packet
from fixtures.sandbox import SandboxServer
from service.store import migrations
from service.store.repository import build_engine
from tests.conftest import fixture_questions

FHIR_JSON = "application/fhir+json"
PG_ADMIN_URL_ENV = "SECOND_OPINION_TEST_PG_URL"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASES = ["sqlite", "postgresql"]


def pg_admin_url() -> str:
    """Where the tests create and drop their PostgreSQL databases (trust auth on 127.0.0.1 by default)."""
    return os.environ.get(PG_ADMIN_URL_ENV, PG_ADMIN_URL)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def require_postgresql() -> None:
    """Skip when PostgreSQL is unreachable on a developer's machine; under CI that is a failure."""
    try:
        psycopg.connect(_libpq(pg_admin_url()), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {pg_admin_url()} ({type(exc).__name__}); .ci/run starts it")
        pytest.skip("PostgreSQL is not reachable here (.ci/run starts it; CI=true makes this a failure)")


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards."""
    require_postgresql()
    name = f"so_test_{uuid.uuid4().hex[:12]}"
    admin = _libpq(pg_admin_url())
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database at the newest schema: a SQLite file, and a PostgreSQL database created for the test."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'writeback.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    engine = build_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox EHR of this test's own: its counts and faults are nobody else's."""
    with SandboxServer() as server:
        yield server


def add_fault(ehr: SandboxServer, **spec: object) -> dict:
    resp = requests.post(f"{ehr.root_url}/_sandbox/faults", json=spec, timeout=5)
    assert resp.status_code == 201, resp.text
    return resp.json()


def clear_faults(ehr: SandboxServer) -> None:
    requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)


def sent_referral(client: FlaskClient, patient: str | None = None) -> str:
    """Draft and send a referral through the API; its id."""
    patient = patient or sorted(fixture_questions())[0]
    resp = client.post("/api/referrals", json={"patient": patient, "question": "Is the diagnosis right?"})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
    referral_id = resp.get_json()["id"]
    sent = client.post(f"/api/referrals/{referral_id}/send")
    assert sent.status_code == 200, sent.get_data(as_text=True)[:500]
    return referral_id


def consult_body(client: FlaskClient, referral_id: str) -> str:
    """The fixture consultant's answer to the referral's packet (FHIR JSON)."""
    packet = Bundle.model_validate(client.get(f"/api/referrals/{referral_id}/packet").get_json())
    return consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)


def post_consult(client: FlaskClient, referral_id: str, body: str | None = None):  # noqa: ANN201
    return client.post(f"/api/referrals/{referral_id}/consult", data=body or consult_body(client, referral_id),
                       headers={"Content-Type": FHIR_JSON})


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05) -> object:
    """Poll until predicate() is truthy; fail the test with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def by_identifier(ehr: SandboxServer, resource_type: str) -> dict[str, int]:
    """How many resources of a type the EHR holds per identifier value (a duplicate shows as 2)."""
    counts: dict[str, int] = {}
    for resource in ehr.store.all(resource_type):
        idents = resource.get("identifier")
        idents = idents if isinstance(idents, list) else [idents] if idents else []
        for ident in idents:
            counts[ident["value"]] = counts.get(ident["value"], 0) + 1
    return counts


def consult_identifiers(client: FlaskClient, referral_id: str) -> tuple[str, str]:
    """The identifier values of a referral's consult document and of its DocumentReference."""
    consult = client.get(f"/api/referrals/{referral_id}").get_json()["consult"]
    document = client.get(f"/api/referrals/{referral_id}/consult").get_json()
    return document["identifier"]["value"], f"urn:uuid:{consult['id']}"
