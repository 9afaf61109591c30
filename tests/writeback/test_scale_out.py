"""Scale-out on PostgreSQL: 2 gunicorn web workers and 2 `second-opinion worker` processes sharing one database take
200 consults posted at once; every one lands exactly once and every referral's history is exactly its four moves."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
from fhir.resources.R4B.bundle import Bundle

from fixtures.consultant import consult_for_packet
from tests.writeback.helpers import by_identifier, free_port, wait_up

ROOT = Path(__file__).resolve().parents[2]
CONSULTS = 200
PATIENT = "so-ms-patient"
FULL_HISTORY = ["draft", "requested", "in-progress", "completed"]


def draft_and_send(http: requests.Session, base: str) -> str:
    """One referral drafted and sent through the web workers; its id."""
    created = http.post(f"{base}/api/referrals", json={"patient": PATIENT, "question": "Is it MS?"}, timeout=120)
    assert created.status_code == 201, created.text[:300]
    referral_id = created.json()["id"]
    assert http.post(f"{base}/api/referrals/{referral_id}/send", timeout=120).status_code == 200
    return referral_id


def test_two_web_and_two_queue_workers_on_postgresql(fresh_pg_url: str, sandbox, tmp_path: Path) -> None:  # noqa: ANN001
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SECOND_OPINION_DATABASE_URL": fresh_pg_url,
           "SECOND_OPINION_FHIR_BASE_URL": sandbox.base_url, "SECOND_OPINION_QUEUE_POLL_S": "0.1",
           "SECOND_OPINION_WRITEBACK_BASE_DELAY_S": "0.2", "SECOND_OPINION_WRITEBACK_MAX_DELAY_S": "2",
           "SECOND_OPINION_LOG_LEVEL": "WARNING"}
    upgrade = subprocess.run([sys.executable, "-m", "service.cli", "db", "upgrade"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)  # the deploy step, before any process
    assert upgrade.returncode == 0, upgrade.stderr
    log = (tmp_path / "processes.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "2", "--threads", "4",
                            "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10", "wsgi:app"],
                           cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    workers = [subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--threads", "4"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT) for _ in range(2)]
    try:
        wait_up(f"{base}/health")
        http = requests.Session()
        http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            referral_ids = list(pool.map(lambda _: draft_and_send(http, base), range(CONSULTS)))
        prepared_s = time.monotonic() - started
        # One patient, so one consultant's answer fits every packet (the service builds a document per consult).
        packet = Bundle.model_validate(http.get(f"{base}/api/referrals/{referral_ids[0]}/packet", timeout=60).json())
        answer = consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:  # all 200 consults at once, spread over both web workers
            statuses = list(pool.map(lambda r: http.post(
                f"{base}/api/referrals/{r}/consult", data=answer, timeout=120,
                headers={"Content-Type": "application/fhir+json"}).status_code, referral_ids))
        assert statuses == [202] * CONSULTS
        posted_s = time.monotonic() - started

        deadline = time.monotonic() + 180
        remaining = set(referral_ids)
        while remaining:
            assert time.monotonic() < deadline, f"{len(remaining)} referral(s) not completed"
            for referral_id in list(remaining):
                if http.get(f"{base}/api/referrals/{referral_id}/history", timeout=30).json()[-1]["to"] == "completed":
                    remaining.discard(referral_id)
            time.sleep(0.5)
        landed_s = time.monotonic() - started

        docrefs = by_identifier(sandbox, "DocumentReference")
        consult_ids = [http.get(f"{base}/api/referrals/{r}", timeout=30).json()["consult"]["id"] for r in referral_ids]
        assert [docrefs.get(f"urn:uuid:{c}") for c in consult_ids] == [1] * CONSULTS
        assert sum(n for v, n in docrefs.items() if v in {f"urn:uuid:{c}" for c in consult_ids}) == CONSULTS
        with ThreadPoolExecutor(8) as pool:
            histories = list(pool.map(lambda r: [h["to"] for h in http.get(
                f"{base}/api/referrals/{r}/history", timeout=30).json()], referral_ids))
        assert all(h == FULL_HISTORY for h in histories)
        print(f"\nscale-out: {CONSULTS} referrals drafted and sent in {prepared_s:.1f} s; consults posted in "
              f"{posted_s:.1f} s; all written back {landed_s:.1f} s after the first consult")
    finally:
        for process in [web, *workers]:
            process.terminate()
        for process in [web, *workers]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
