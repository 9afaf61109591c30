"""SandboxServer and run_sandbox: real sockets on 127.0.0.1, clean start and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from fixtures.sandbox import SandboxServer

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_server_binds_a_free_port_and_reports_its_urls() -> None:
    server = SandboxServer(load_fixtures=False).start()
    try:
        assert server.port != 0
        assert server.root_url == f"http://127.0.0.1:{server.port}"
        assert server.base_url == f"{server.root_url}/fhir"
        with requests.Session() as session:
            assert session.get(f"{server.root_url}/_sandbox/health", timeout=10).json() == {"status": "ok"}
    finally:
        server.stop()


def test_stop_closes_the_socket_and_is_idempotent() -> None:
    with SandboxServer(load_fixtures=False) as server:
        port = server.port
    server.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_an_explicit_port_is_used(make_fhir: Any) -> None:
    port = free_port()
    with SandboxServer(port=port, load_fixtures=False) as server:
        assert server.base_url == f"http://127.0.0.1:{port}/fhir"
        assert make_fhir(server).get("metadata").status_code == 200


@contextmanager
def sandbox_process(port: int, options: str = "") -> Iterator[str]:
    """`run_sandbox` in a child process: yields the line it printed, then stops it with Ctrl-C and checks it ended
    cleanly."""
    code = f"from fixtures.sandbox import run_sandbox; run_sandbox(port={port}, load_fixtures=False{options})"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        yield process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
        assert process.returncode == 0, errors
        assert "Traceback" not in errors


def test_run_sandbox_prints_its_base_url_and_stops_on_ctrl_c() -> None:
    port = free_port()
    with sandbox_process(port, ", profile='cerner'") as line:
        assert f"http://127.0.0.1:{port}/fhir" in line
        with requests.Session() as session:
            statement = session.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=30).json()
        assert "MedicationStatement" not in {resource["type"] for resource in statement["rest"][0]["resource"]}


def test_the_blocking_server_keeps_connections_alive_and_decimals_exact() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    body = ('{"resourceType":"Observation","status":"final","code":{"text":"Potassium"},'
            '"valueQuantity":{"value":4.50,"unit":"mmol/L"}}')
    with sandbox_process(port), requests.Session() as session:
        created = session.post(f"{base}/Observation", data=body, timeout=30,
                               headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201
        assert created.headers.get("Connection", "").lower() != "close"
        location = created.headers["Location"].split("/fhir/")[1].split("/_history")[0]
        again = session.get(f"{base}/{location}", headers={"Accept": "application/fhir+json"}, timeout=30)
        assert '"value":4.50' in again.text
