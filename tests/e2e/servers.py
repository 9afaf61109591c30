"""FHIR servers the end-to-end suite runs against: our sandbox, and sekmet-fhir (a server nobody here wrote)."""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

SEKMET_BIN_ENV = "SEKMET_BIN"  # path to the `sekmet` executable in its own venv (.ci/run installs it)


@dataclass
class FhirServer:
    """A FHIR R4 server on 127.0.0.1, reached only over HTTP."""

    name: str
    base_url: str

    def post_bundle(self, bundle: bytes) -> dict:
        resp = requests.post(self.base_url, data=bundle, headers={"Content-Type": "application/fhir+json",
                                                                   "Accept": "application/fhir+json"}, timeout=300)
        assert resp.status_code == 200, f"{self.name}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def read(self, reference: str) -> dict:
        resp = requests.get(f"{self.base_url}/{reference}", headers={"Accept": "application/fhir+json"}, timeout=30)
        assert resp.status_code == 200, f"{self.name}: {reference} → {resp.status_code}"
        return resp.json()

    def search_ids(self, resource_type: str, **params: str) -> set[str]:
        """Every id a search returns, following next links."""
        ids: set[str] = set()
        url: str | None = f"{self.base_url}/{resource_type}"
        query: dict | None = {**params, "_count": "100"}
        while url:
            page = requests.get(url, params=query, headers={"Accept": "application/fhir+json"}, timeout=60).json()
            ids |= {e["resource"]["id"] for e in page.get("entry", [])
                    if e["resource"]["resourceType"] == resource_type and e.get("search", {}).get("mode", "match") == "match"}
            url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
            query = None
        return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sekmet_executable() -> str | None:
    """The sekmet command from SEKMET_BIN, or on PATH."""
    configured = os.environ.get(SEKMET_BIN_ENV)
    if configured:
        return configured
    return shutil.which("sekmet")


def require_sekmet() -> str:
    """The sekmet command; skipped where it is not installed, a failure under CI (where .ci/run installs it)."""
    executable = sekmet_executable()
    if executable is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("sekmet-fhir is not installed: .ci/run must install it and set SEKMET_BIN")
        pytest.skip("sekmet-fhir not installed here (set SEKMET_BIN; .ci/run installs it in its own venv)")
    return executable


class SekmetProcess:
    """sekmet-fhir 0.1.1 as a subprocess: 127.0.0.1 only, simulator off, data in a temporary folder."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable, self.workdir = executable, workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/fhir"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def settings_yaml(self) -> str:
        """sekmet's settings file: 127.0.0.1 only, simulator off (subclasses add to it)."""
        return (f"base_url: {self.base_url}\nhost: 127.0.0.1\nport: {self.port}\ndata_dir: {self.workdir / 'data'}\n"
                "simulator:\n  enabled: false\nlog_inbound: false\n")

    def start(self) -> "SekmetProcess":
        settings = self.workdir / "settings.yaml"
        settings.write_text(self.settings_yaml(), "utf-8")
        self._log = (self.workdir / "sekmet.log").open("wb")
        self.proc = subprocess.Popen([self.executable, "serve", "--config", str(settings), "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=self.workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sekmet exited with {self.proc.returncode}; see {self.workdir / 'sekmet.log'}")
            try:
                if requests.get(f"{self.base_url}/metadata", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("sekmet did not come up within 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
