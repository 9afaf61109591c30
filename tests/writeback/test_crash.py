"""A `second-opinion worker` process killed with SIGKILL at random points of write-back, again and again: every
consult still lands exactly once."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store.models import ReferralRow
from service.store.repository import build_engine, get_repository, utcnow
from tests.writeback.helpers import (
    add_fault,
    by_identifier,
    clear_faults,
    consult_body,
    consult_identifiers,
    history,
    post_consult,
    sent_referral,
    wait_for_statuses,
)

ROOT = Path(__file__).resolve().parents[2]
CONSULTS = 50
KILLS = 20
WRITE_DELAY_S = 0.15  # every write to the EHR takes this long: kills land mid-request as well as between steps
PATIENT = "so-ms-patient"  # the quickest fixture record to fetch
STARTING = 2  # workers importing while one works (a start takes seconds; kills come faster than that)


class WorkerProcess:
    """`second-opinion worker` as a subprocess; ready once it has printed its banner."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--threads", "3"], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=self._log)
        self.ready = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(b"second-opinion worker:"):
                self.ready.set()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self._close()

    def _close(self) -> None:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._watcher.join(timeout=10)
        self.proc.stdout.close()
        self._log.close()


def leases_held(database_url: str, pid: int) -> int:
    """How many referrals' write-back the process holds a live lease on (it is mid-write-back when > 0)."""
    engine = build_engine(database_url)
    try:
        with Session(engine) as s:
            return s.scalar(select(func.count()).select_from(ReferralRow).where(
                ReferralRow.lease_owner.like(f"%:{pid}:%"), ReferralRow.lease_expires_at > utcnow())) or 0
    finally:
        engine.dispose()


def test_sigkilled_workers_lose_and_duplicate_nothing(sandbox, make_app, tmp_path: Path) -> None:  # noqa: ANN001
    # SQLite, the default deployment. The same outbox, lease and sweeper code runs on PostgreSQL, where the other
    # write-back tests and the scale-out test exercise it; 20+ worker starts per database cost too much suite time.
    database_url = f"sqlite:///{tmp_path / 'crash.sqlite3'}"
    web = make_app(FHIR_BASE_URL=sandbox.base_url, DATABASE_URL=database_url, worker=False)  # serve --no-worker
    docrefs_before, bundles_before = len(sandbox.store.all("DocumentReference")), len(sandbox.store.all("Bundle"))
    client = web.test_client()
    referral_ids = [sent_referral(client, PATIENT) for _ in range(CONSULTS)]
    bodies = {r: consult_body(client, r) for r in referral_ids}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SECOND_OPINION_DATABASE_URL": database_url,
           "SECOND_OPINION_FHIR_BASE_URL": sandbox.base_url, "SECOND_OPINION_WRITEBACK_LEASE_S": "1.0",
           "SECOND_OPINION_WRITEBACK_SWEEP_S": "0.5", "SECOND_OPINION_QUEUE_POLL_S": "0.05",
           "SECOND_OPINION_WRITEBACK_BASE_DELAY_S": "0.1", "SECOND_OPINION_WRITEBACK_MAX_DELAY_S": "1"}
    add_fault(sandbox, mode="hang", delay_s=WRITE_DELAY_S, methods=["POST", "PUT"])
    rng = random.Random(6)
    repo = get_repository(web)
    log = tmp_path / "worker.log"
    # Workers start slowly (imports): the next one is started while the current one works, so kills come often.
    workers: list[WorkerProcess] = [WorkerProcess(env, log)]
    kills, lives, posted, started = 0, 1, 0, time.monotonic()
    try:
        while kills < KILLS:
            assert time.monotonic() - started < 300, f"only {kills} kills mid-write-back in 300 s"
            assert workers[0].ready.wait(60), "the worker did not start"
            while posted < CONSULTS and (posted < 10 or rng.random() < 0.6):  # consults keep arriving
                assert post_consult(client, referral_ids[posted], bodies[referral_ids[posted]]).status_code == 202
                posted += 1
            while len(workers) < STARTING + 1:
                workers.append(WorkerProcess(env, log))
                lives += 1
            time.sleep(rng.uniform(0.1, 0.6))
            if leases_held(database_url, workers[0].proc.pid):  # it is mid-write-back: kill it there
                workers.pop(0).kill()
                kills += 1
            assert repo.pending_count() or posted < CONSULTS, f"all written after only {kills} kills"
        for referral_id in referral_ids[posted:]:
            assert post_consult(client, referral_id, bodies[referral_id]).status_code == 202
        wait_for_statuses(client, referral_ids, timeout_s=120)
    finally:
        for worker in workers:
            worker.stop()
        clear_faults(sandbox)

    bundles, docrefs = by_identifier(sandbox, "Bundle"), by_identifier(sandbox, "DocumentReference")
    mine = [consult_identifiers(client, r) for r in referral_ids]
    assert [bundles.get(document) for document, _ in mine] == [1] * CONSULTS
    assert [docrefs.get(docref) for _, docref in mine] == [1] * CONSULTS
    assert len(sandbox.store.all("DocumentReference")) == docrefs_before + CONSULTS  # nothing else, no duplicate
    assert len(sandbox.store.all("Bundle")) == bundles_before + CONSULTS
    assert all(history(client, r) == ["draft", "requested", "in-progress", "completed"] for r in referral_ids)
    print(f"\ncrash test ({database_url.split(':')[0]}): {kills} SIGKILLs mid-write-back over {lives} worker "
          f"lives, {CONSULTS} consults, {time.monotonic() - started:.1f} s")
