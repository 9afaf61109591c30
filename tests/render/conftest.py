"""Referrals for the rendition tests: one per fixture patient, drafted with the fixture questions, sent, and
answered by the fixture consultant, against the sandbox EHR over real HTTP (created once per module).

The app runs without a write-back worker (WRITEBACK off), so the shared sandbox keeps no consult documents
from these tests (other tests count the patients' reports).
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.bundle import Bundle
from flask.testing import FlaskClient

from fixtures.consultant import consult_for_packet
from service import create_app
from service.store.repository import get_repository
from tests.conftest import fixture_questions

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def rendition_client(ehr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:  # noqa: ANN001
    """The service pointed at the sandbox, with its own SQLite file, no write-back worker."""
    database = tmp_path_factory.mktemp("render") / "db.sqlite3"
    app = create_app({"TESTING": True, "FHIR_BASE_URL": ehr.base_url, "FHIR_BACKOFF": 0.05, "WRITEBACK": "off",
                      "DATABASE_URL": f"sqlite:///{database}"})
    yield app.test_client()
    get_repository(app).engine.dispose()


@pytest.fixture(scope="module")
def referrals(rendition_client: FlaskClient) -> dict[str, str]:
    """Fixture patient → the id of their referral, sent and answered with a consult."""
    made = {}
    for patient, asked in sorted(fixture_questions().items()):
        created = rendition_client.post("/api/referrals", json={"patient": patient, **asked})
        assert created.status_code == 201, created.get_data(as_text=True)[:300]
        referral_id = created.get_json()["id"]
        assert rendition_client.post(f"/api/referrals/{referral_id}/send").status_code == 200
        packet = Bundle.model_validate(rendition_client.get(f"/api/referrals/{referral_id}/packet").get_json())
        body = consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)
        answered = rendition_client.post(f"/api/referrals/{referral_id}/consult", data=body,
                                         headers={"Content-Type": FHIR_JSON})
        assert answered.status_code == 202, answered.get_data(as_text=True)[:300]
        made[patient] = referral_id
    return made
