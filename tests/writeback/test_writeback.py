"""Write-back through the real queue consumer, on SQLite and PostgreSQL: outages, Retry-After, the retry budget,
manual retry, lost queue messages, and two consumers sharing one database."""

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from service.queue import get_queue, start_consumer
from service.store.repository import get_repository
from tests.writeback.helpers import (
    add_fault,
    by_identifier,
    clear_faults,
    consult_body,
    consult_identifiers,
    history,
    post_consult,
    request_count,
    sent_referral,
    wait_for,
    wait_for_statuses,
)

ROOT = Path(__file__).resolve().parents[2]


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
FULL_HISTORY = ["draft", "requested", "in-progress", "completed"]


def assert_landed_once(client, ehr, referral_ids: list[str]) -> None:  # noqa: ANN001
    """Each referral's consult document and DocumentReference is in the EHR exactly once, its Task completed."""
    bundles, docrefs = by_identifier(ehr, "Bundle"), by_identifier(ehr, "DocumentReference")
    for referral_id in referral_ids:
        document_ident, docref_ident = consult_identifiers(client, referral_id)
        assert bundles.get(document_ident) == 1, referral_id
        assert docrefs.get(docref_ident) == 1, referral_id
        body = client.get(f"/api/referrals/{referral_id}").get_json()
        task = ehr.store.get("Task", body["task"].split("/")[1])
        assert task["status"] == "completed"
        assert task["output"][0]["valueReference"]["reference"] == body["writeback"]["document_reference"]


def test_an_outage_delays_write_back_and_every_consult_lands_exactly_once(database_url: str, sandbox,
                                                                          make_app) -> None:  # noqa: ANN001
    app = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url)
    client = app.test_client()
    referral_ids = [sent_referral(client, "so-ms-patient") for _ in range(6)]
    bodies = {r: consult_body(client, r) for r in referral_ids}
    add_fault(sandbox, status=503, duration_s=2.5)
    started = time.monotonic()
    for index, referral_id in enumerate(referral_ids):  # consults keep arriving while the EHR is down
        assert post_consult(client, referral_id, bodies[referral_id]).status_code == 202
        if index % 2:
            time.sleep(0.2)
    during = [client.get(f"/api/referrals/{r}").get_json() for r in referral_ids]
    assert time.monotonic() - started < 2.5, "the outage ended before every consult was in"
    assert all(b["status"] == "in-progress" for b in during)
    wait_for(lambda: get_repository(app).jobs(referral_ids[0])[0].attempts >= 1, 10, "a failed attempt")

    done = wait_for_statuses(client, referral_ids, timeout_s=60)
    assert time.monotonic() - started >= 2.5
    assert max(b["writeback"]["attempts"] for b in done.values()) >= 1
    assert_landed_once(client, sandbox, referral_ids)
    assert all(history(client, r) == FULL_HISTORY for r in referral_ids)


def test_retry_after_is_honoured(sandbox, make_app) -> None:  # noqa: ANN001
    app = make_app(FHIR_BASE_URL=sandbox.base_url)
    client = app.test_client()
    referral_id = sent_referral(client)
    add_fault(sandbox, status=429, count=1, retry_after=2, methods=["POST"])
    assert post_consult(client, referral_id).status_code == 202
    repo = get_repository(app)
    job = wait_for(lambda: (j := repo.jobs(referral_id)[0]).attempts == 1 and j, 10, "the throttled attempt")
    assert (job.next_attempt_at - job.last_attempt_at).total_seconds() >= 1.95  # backoff alone would be ~0.05 s
    assert "429" in job.last_error
    done = wait_for_statuses(client, [referral_id], timeout_s=20)[referral_id]
    first_write = next(e for e in client.get(f"/api/referrals/{referral_id}/audit").get_json()
                       if e["action"] == "ehr.write" and e["status"] == 201 and e["resource"].startswith("Bundle/"))
    waited = instant(first_write["at"]) - instant(done["writeback"]["last_attempt"])
    assert waited.total_seconds() >= 1  # whole seconds on the API; the 2 s are checked precisely above
    assert_landed_once(client, sandbox, [referral_id])


def test_a_spent_retry_budget_fails_the_referral_with_its_reason_and_retry_resumes_it(database_url: str, sandbox,
                                                                                     make_app) -> None:  # noqa: ANN001
    app = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url, WRITEBACK_RETRY_BUDGET_S=1.0)
    client = app.test_client()
    referral_id = sent_referral(client)
    add_fault(sandbox, status=503, duration_s=60, methods=["POST"])
    try:
        assert post_consult(client, referral_id).status_code == 202
        failed = wait_for_statuses(client, [referral_id], ("failed",), timeout_s=20)[referral_id]
        assert "gave up after" in failed["status_reason"] and "503" in failed["status_reason"]
        assert failed["writeback"]["status"] == "failed" and failed["writeback"]["attempts"] >= 2
        # The EHR's Task shows the failure too (PUTs still work; only POSTs are refused).
        task_id = failed["task"].split("/")[1]
        wait_for(lambda: sandbox.store.get("Task", task_id)["status"] == "failed", 10, "the Task to show failed")
        assert sandbox.store.get("Task", task_id)["businessStatus"]["coding"][0]["code"] == "6.0"
    finally:
        clear_faults(sandbox)
    resp = client.post(f"/api/referrals/{referral_id}/retry")
    assert resp.status_code == 202 and resp.get_json()["status"] == "in-progress"
    wait_for_statuses(client, [referral_id], timeout_s=20)
    assert history(client, referral_id) == ["draft", "requested", "in-progress", "failed", "in-progress", "completed"]
    assert_landed_once(client, sandbox, [referral_id])
    again = client.post(f"/api/referrals/{referral_id}/retry")
    assert again.status_code == 409 and again.get_json()["issue"][0]["code"] == "conflict"


def test_the_retry_command_resumes_a_failed_referral(tmp_path: Path, sandbox, make_app) -> None:  # noqa: ANN001
    database = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    app = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database, WRITEBACK_RETRY_BUDGET_S=0.5)
    client = app.test_client()
    referral_id = sent_referral(client)
    add_fault(sandbox, status=502, duration_s=60, methods=["POST"])
    try:
        post_consult(client, referral_id)
        wait_for_statuses(client, [referral_id], ("failed",), timeout_s=20)
    finally:
        clear_faults(sandbox)
    env = {"PATH": "/usr/bin:/bin", "SECOND_OPINION_DATABASE_URL": database,
           "SECOND_OPINION_FHIR_BASE_URL": sandbox.base_url}
    result = subprocess.run([sys.executable, "-m", "service.cli", "retry", referral_id], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "write-back resumed" in result.stdout
    wait_for_statuses(client, [referral_id], timeout_s=20)  # this test's consumer picked up the CLI's message
    assert_landed_once(client, sandbox, [referral_id])
    refused = subprocess.run([sys.executable, "-m", "service.cli", "retry", referral_id], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "only a failed referral" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_lost_queue_messages_are_recovered_by_the_sweeper(database_url: str, sandbox, make_app) -> None:  # noqa: ANN001
    app = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url, worker=False)
    client = app.test_client()
    referral_ids = [sent_referral(client, "so-ms-patient") for _ in range(3)]
    for referral_id in referral_ids:
        assert post_consult(client, referral_id).status_code == 202
    queue = get_queue(app)
    assert queue.huey.pending_count() == 3
    queue.huey.storage.flush_queue()  # as if the messages were lost (a worker killed after dequeuing them)
    assert get_repository(app).pending_count() == 3
    start_consumer(app)
    wait_for_statuses(client, referral_ids, timeout_s=30)
    assert_landed_once(client, sandbox, referral_ids)


def test_two_consumers_on_one_database_never_run_a_step_twice(database_url: str, sandbox, make_app) -> None:  # noqa: ANN001
    first = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url)
    make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url)  # a second consumer, same queue
    client = first.test_client()
    referral_ids = [sent_referral(client, "so-ms-patient") for _ in range(8)]
    bodies = {r: consult_body(client, r) for r in referral_ids}
    add_fault(sandbox, mode="hang", delay_s=0.05, methods=["POST", "PUT"])  # widen every write's window
    for referral_id in referral_ids:
        assert post_consult(client, referral_id, bodies[referral_id]).status_code == 202
    wait_for_statuses(client, referral_ids, timeout_s=60)
    clear_faults(sandbox)
    assert request_count(sandbox, "POST", "/fhir/DocumentReference") == 8
    assert request_count(sandbox, "POST", "/fhir/Bundle") == 8
    assert_landed_once(client, sandbox, referral_ids)


@pytest.mark.parametrize("mode", ["inline", "off"])
def test_inline_and_off_modes(mode: str, sandbox, make_app) -> None:  # noqa: ANN001
    app = make_app(FHIR_BASE_URL=sandbox.base_url, WRITEBACK=mode, worker=False)
    client = app.test_client()
    referral_id = sent_referral(client)
    accepted = post_consult(client, referral_id)
    assert accepted.status_code == 202
    expected = {"inline": "completed", "off": "in-progress"}[mode]
    assert client.get(f"/api/referrals/{referral_id}").get_json()["status"] == expected


def test_the_whole_referral_loop_over_http_completes_on_each_database(database_url: str, sandbox,
                                                                      make_app) -> None:  # noqa: ANN001
    from service.demo import run_referral
    from service.serving import ServiceServer

    app = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url)
    with ServiceServer(app) as server:
        result = run_referral(server.url, "so-prostate-patient", "Is surgery the right choice?", [],
                              say=lambda _message: None)
    assert result.referral["status"] == "completed", result.referral.get("writeback")
    docref = sandbox.store.get("DocumentReference", result.document_reference.split("/")[1])
    assert docref["subject"]["reference"] == "Patient/so-prostate-patient"
    assert history(app.test_client(), result.referral["id"]) == ["draft", "requested", "in-progress", "completed"]
