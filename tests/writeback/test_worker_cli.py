"""`second-opinion serve --no-worker` answers but writes nothing back; `second-opinion worker` does the write-back."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from fhir.resources.R4B.bundle import Bundle

from fixtures.consultant import consult_for_packet
from tests.conftest import fixture_questions
from tests.writeback.helpers import free_port, wait_for, wait_up

ROOT = Path(__file__).resolve().parents[2]


def test_the_web_side_alone_queues_and_a_worker_process_writes_back(tmp_path: Path, sandbox) -> None:  # noqa: ANN001
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SECOND_OPINION_FHIR_BASE_URL": sandbox.base_url,
           "SECOND_OPINION_DATABASE_URL": f"sqlite:///{tmp_path / 'split.sqlite3'}", "SECOND_OPINION_QUEUE_POLL_S": "0.05"}
    log = (tmp_path / "processes.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--no-worker", "--port", str(port)],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_up(f"{url}/health")
        patient = sorted(fixture_questions())[0]
        created = requests.post(f"{url}/api/referrals", json={"patient": patient, "question": "q"}, timeout=60).json()
        referral_id = created["id"]
        requests.post(f"{url}/api/referrals/{referral_id}/send", timeout=60).raise_for_status()
        packet = Bundle.model_validate(requests.get(f"{url}/api/referrals/{referral_id}/packet", timeout=60).json())
        body = consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)
        accepted = requests.post(f"{url}/api/referrals/{referral_id}/consult", data=body, timeout=60,
                                 headers={"Content-Type": "application/fhir+json"})
        assert accepted.status_code == 202
        time.sleep(1.0)
        assert requests.get(f"{url}/api/referrals/{referral_id}", timeout=30).json()["status"] == "in-progress"
        assert not sandbox.store.all("Provenance")  # nothing written back without a worker

        worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--threads", "1"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        done = wait_for(lambda: (b := requests.get(f"{url}/api/referrals/{referral_id}", timeout=30).json())[
            "status"] == "completed" and b, 60, "the worker process to write the consult back")
        assert sandbox.store.get("DocumentReference", done["writeback"]["document_reference"].split("/")[1])
    finally:
        for process in (web, worker):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        log.close()
    assert b"Traceback" not in (tmp_path / "processes.log").read_bytes()
