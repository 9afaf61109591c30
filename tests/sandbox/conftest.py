"""Fixtures for the sandbox EHR tests: a server on a free 127.0.0.1 port and a FHIR-speaking HTTP client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fixtures.sandbox import SandboxServer

FHIR_JSON = "application/fhir+json"


class FhirHttp:
    """A thin requests wrapper that speaks FHIR JSON to one sandbox."""

    def __init__(self, session: requests.Session, server: SandboxServer) -> None:
        self.session = session
        self.server = server
        self.base = server.base_url

    def url(self, path: str) -> str:
        """Return an absolute URL for a path relative to the FHIR base (or absolute already)."""
        return path if path.startswith("http") else f"{self.base}/{path}".rstrip("/")

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET with Accept: application/fhir+json."""
        kwargs.setdefault("timeout", 30)
        return self.session.get(self.url(path), headers={"Accept": FHIR_JSON, **kwargs.pop("headers", {})}, **kwargs)

    def send(self, method: str, path: str, resource: Any, **kwargs: Any) -> requests.Response:
        """Send a JSON body with Content-Type: application/fhir+json."""
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **kwargs.pop("headers", {})}
        body = resource if isinstance(resource, bytes | str) else json.dumps(resource)
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url(path), data=body, headers=headers, **kwargs)

    def post(self, path: str, resource: Any, **kwargs: Any) -> requests.Response:
        """POST a resource."""
        return self.send("POST", path, resource, **kwargs)

    def put(self, path: str, resource: Any, **kwargs: Any) -> requests.Response:
        """PUT a resource."""
        return self.send("PUT", path, resource, **kwargs)

    def delete(self, path: str) -> requests.Response:
        """DELETE a resource."""
        return self.session.delete(self.url(path), timeout=30)

    @staticmethod
    def outcome_codes(response: requests.Response) -> list[str]:
        """Return the issue codes of an OperationOutcome response (asserting it is one)."""
        assert response.headers["Content-Type"].startswith(FHIR_JSON), response.headers["Content-Type"]
        body = response.json()
        assert body["resourceType"] == "OperationOutcome", body
        return [issue["code"] for issue in body["issue"]]

    def search_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Search and follow every next link; return all entries."""
        entries: list[dict[str, Any]] = []
        response = self.get(path, params=params)
        while True:
            assert response.status_code == 200, response.text
            bundle = response.json()
            entries += bundle.get("entry", [])
            next_links = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
            if not next_links:
                return entries
            response = self.get(next_links[0])


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh, empty sandbox (no fixtures) on a free port."""
    with SandboxServer(load_fixtures=False) as server:
        yield server


@pytest.fixture
def http_session() -> Iterator[requests.Session]:
    """A requests session, closed after the test."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def fhir(http_session: requests.Session, sandbox: SandboxServer) -> FhirHttp:
    """A FHIR client for the fresh sandbox."""
    return FhirHttp(http_session, sandbox)


@pytest.fixture
def make_fhir(http_session: requests.Session) -> Any:
    """Build a FHIR client for another sandbox server."""
    return lambda server: FhirHttp(http_session, server)
