"""Fixtures for SMART tests: the sandbox behind SMART, the service on a real port, keys made at run time, sekmet."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask

from fixtures.sandbox import SandboxServer, SmartOptions
from fixtures.sandbox.smart import SMART_KEY
from service.ehr.connection import EXTENSION as EHR_SESSION
from service.serving import ServiceServer
from tests.e2e.servers import SekmetProcess, require_sekmet

PATIENT_A = "so-ms-patient"
PATIENT_B = "so-cad-patient"


@pytest.fixture
def make_smart_ehr() -> Iterator[Callable[..., SandboxServer]]:
    """Start sandboxes behind SMART (options as SmartOptions fields); each is stopped after the test."""
    servers: list[SandboxServer] = []

    def factory(**options: object) -> SandboxServer:
        server = SandboxServer(auth="smart", smart=SmartOptions(**options)).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def smart_ehr(make_smart_ehr) -> SandboxServer:  # noqa: ANN001
    return make_smart_ehr()


@pytest.fixture
def serve(make_app) -> Iterator[Callable[..., tuple[Flask, str]]]:  # noqa: ANN001
    """Start the service on a free 127.0.0.1 port with config overrides; returns (app, url)."""
    servers: list[ServiceServer] = []

    def factory(before_start: Callable[[Flask], None] | None = None, **config: object) -> tuple[Flask, str]:
        app = make_app(WRITEBACK="inline", **config)
        if before_start is not None:
            before_start(app)  # e.g. add a route, which Flask allows only before the first request
        server = ServiceServer(app).start()
        servers.append(server)
        return app, server.url

    yield factory
    for server in servers:
        server.stop()
        server.app.extensions[EHR_SESSION].close()  # its pooled connections to sandboxes that are gone now


@pytest.fixture
def browser() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def ehr_launch(browser: requests.Session, ehr: SandboxServer, service_url: str, patient: str = PATIENT_A,
               **context: str) -> requests.Response:
    """Click the app in the sandbox's chart and follow every redirect, as a browser does."""
    return browser.get(f"{ehr.root_url}/_sandbox/launch-app",
                       params={"patient": patient, "launch_url": f"{service_url}/launch", **context}, timeout=60)


def standalone_launch(browser: requests.Session, ehr: SandboxServer, service_url: str) -> requests.Response:
    return browser.get(f"{service_url}/launch/standalone", params={"iss": ehr.base_url}, timeout=60)


def step(browser: requests.Session, url: str, **params: str) -> requests.Response:
    """One hop of a flow, without following redirects."""
    return browser.get(url, params=params or None, allow_redirects=False, timeout=60)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def smart_registry(ehr: SandboxServer):  # noqa: ANN201
    """The sandbox authorization server's memory (tokens issued), to search logs and responses for them."""
    return ehr.app.extensions[SMART_KEY]


def issued_secrets(ehr: SandboxServer) -> list[str]:
    """Every access token, refresh token and authorization code the sandbox issued so far."""
    reg = smart_registry(ehr)
    with reg.lock:
        return [*reg.access_tokens, *reg.refresh_tokens, *reg.codes]


def expire_tokens(ehr: SandboxServer, *, access: bool = True, refresh: bool = False) -> None:
    resp = requests.post(f"{ehr.root_url}/_sandbox/smart/expire",
                         json={"access_tokens": access, "refresh_tokens": refresh}, timeout=10)
    assert resp.status_code == 200 and resp.json()["expired"] >= 1, resp.text


def write_key(folder: Path, alg: str = "RS384", name: str = "key") -> Path:
    """A new private key in PEM (PKCS#8), made at run time: nothing secret lives in the repository."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if alg == "RS384" \
        else ec.generate_private_key(ec.SECP384R1())
    path = folder / f"{name}-{alg}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def register_client(ehr: SandboxServer, client_id: str, jwks: dict, scope: str = "system/*.*") -> None:
    resp = requests.post(f"{ehr.root_url}/_sandbox/clients", json={"client_id": client_id, "jwks": jwks,
                                                                   "scope": scope}, timeout=10)
    assert resp.status_code == 201, resp.text


class SekmetWithSmart(SekmetProcess):
    """sekmet-fhir with SMART backend services on: only bearer tokens from its token endpoint are accepted."""

    def __init__(self, executable: str, workdir: Path, clients: list[dict]) -> None:
        super().__init__(executable, workdir)
        self.clients = clients

    def settings_yaml(self) -> str:
        server_auth = {"types": ["smart"], "smart_clients": self.clients, "token_lifetime": 300,
                       "enforce_scopes": True}
        return (super().settings_yaml() + f"own_private_key_path: {self.workdir / 'sekmet_private.pem'}\n"
                f"server_auth: {json.dumps(server_auth)}\n")


@pytest.fixture
def sekmet_executable_or_fail() -> str:
    """The sekmet command; in CI its absence fails the test instead of skipping it."""
    return require_sekmet()
