"""The end-to-end suite runs once per FHIR server: the sandbox EHR and sekmet-fhir."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_PATIENTS
from tests.e2e.servers import FhirServer, SekmetProcess, require_sekmet

SERVERS = ["sandbox", "sekmet"]


def _load_fixture_patients(server: FhirServer) -> None:
    for path in sorted(FIXTURE_PATIENTS.glob("*.json")):
        if path.name != "questions.json":
            server.post_bundle(path.read_bytes())


@pytest.fixture(scope="session")
def sekmet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    executable = require_sekmet()
    process = SekmetProcess(executable, Path(tmp_path_factory.mktemp("sekmet"))).start()
    server = FhirServer("sekmet", process.base_url)
    try:
        _load_fixture_patients(server)
        yield server
    finally:
        process.stop()


@pytest.fixture(scope="session", params=SERVERS)
def fhir_server(request: pytest.FixtureRequest, ehr) -> FhirServer:  # noqa: ANN001
    """Each end-to-end test runs against every server in SERVERS, loaded with the fixture patients."""
    if request.param == "sandbox":
        return FhirServer("sandbox", ehr.base_url)
    return request.getfixturevalue("sekmet_server")
