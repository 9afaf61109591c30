"""The store on SQLite and PostgreSQL: migrations, leases, the outbox, transitions, audit."""

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.errors import ConfigurationError, Conflict, NotFound
from service.store import migrations
from service.store.repository import AuditEvent, Consult, Referral, ReferralRepository, build_engine, utcnow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(database_url: str) -> ReferralRepository:
    engine = build_engine(database_url)
    yield ReferralRepository(engine)
    engine.dispose()


def referral(referral_id: str = "r1", status: str = "requested", ehr_task: str | None = "Task/t1") -> Referral:
    now = datetime.now(UTC)
    return Referral(id=referral_id, patient_id="p1", ehr_base_url="http://127.0.0.1/fhir", status=status,
                    question="q", patient_questions=[], exclude=[], excluded=[], warnings=[], counts={},
                    packet_identifier="urn:uuid:x", packet_json="{}", service_request_json="{}", task_json="{}",
                    ehr_service_request="ServiceRequest/s1", ehr_task=ehr_task, created_at=now, updated_at=now,
                    sent_at=now)


def consult(referral_id: str = "r1", consult_id: str = "c1") -> Consult:
    return Consult(id=consult_id, referral_id=referral_id, received_at=datetime.now(UTC), content_type="x",
                   source="{}", document_json="{}", document_reference_json="{}", status="pending", last_error=None,
                   attempts=0)


def test_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = build_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    migrations.target_metadata())
        assert diff == []
        assert migrations.current_revision(engine) == migrations.head_revision() == migrations.HEAD
        migrations.upgrade(engine)  # a second upgrade is a no-op
        assert {"referrals", "transitions", "consults", "writeback_jobs", "writeback_steps", "audit",
                "auth_pending_launches", "auth_sessions", "cds_card", "cds_feedback", "cds_jwt_seen",
                "api_tokens"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_postgresql_without_migrations_refuses_to_start(fresh_pg_url: str) -> None:
    from service import create_app

    with pytest.raises(ConfigurationError, match="db upgrade"):
        create_app({"DATABASE_URL": fresh_pg_url, "FHIR_BASE_URL": "http://127.0.0.1:9/fhir"})


def test_db_upgrade_command_migrates_postgresql_and_the_app_then_starts(fresh_pg_url: str) -> None:
    env = {"SECOND_OPINION_DATABASE_URL": fresh_pg_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "service.cli", "db", "upgrade"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"is at {migrations.head_revision()}" in result.stdout
    from service import create_app
    from service.store.repository import get_repository

    from service.queue import stop_consumer

    app = create_app({"DATABASE_URL": fresh_pg_url, "FHIR_BASE_URL": "http://127.0.0.1:9/fhir"})
    assert get_repository(app).pending_count() == 0
    stop_consumer(app)
    get_repository(app).engine.dispose()


def test_db_upgrade_command_creates_a_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite3"
    result = subprocess.run([sys.executable, "-m", "service.cli", "db", "upgrade"], cwd=ROOT,
                            env={"SECOND_OPINION_DATABASE_URL": f"sqlite:///{db}", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    engine = build_engine(f"sqlite:///{db}")
    assert migrations.current_revision(engine) == migrations.head_revision()
    engine.dispose()


def test_a_0001_database_whose_auth_and_cds_tables_came_from_create_all_upgrades(tmp_path: Path) -> None:
    """Before 0002 the SMART and CDS tables were made at startup by create_all: upgrading keeps them and their rows."""
    from service.auth.store import metadata as auth_metadata
    from service.cds.store import metadata as cds_metadata

    engine = build_engine(f"sqlite:///{tmp_path / 'at-0001.sqlite3'}")
    try:
        migrations.upgrade(engine, "0001")
        cds_metadata.create_all(engine)
        auth_metadata.create_all(engine, tables=[t for t in auth_metadata.sorted_tables if t.name != "api_tokens"])
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO cds_jwt_seen (iss, jti, expires_at) VALUES ('i', 'j', 1)")
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.HEAD
        assert "api_tokens" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM cds_jwt_seen").scalar() == 1
    finally:
        engine.dispose()


def test_a_database_from_before_migrations_is_refused_clearly(tmp_path: Path) -> None:
    engine = build_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE referrals (id TEXT PRIMARY KEY)")
    with pytest.raises(ConfigurationError, match="before migrations"):
        migrations.upgrade(engine)
    engine.dispose()


def test_only_one_worker_holds_a_lease_until_it_expires_or_is_released(repo: ReferralRepository) -> None:
    repo.add(referral(), actor="t")
    assert repo.claim("r1", "a", ttl_s=30)
    assert not repo.claim("r1", "b", ttl_s=30)
    assert repo.renew_lease("r1", "a", ttl_s=30) and not repo.renew_lease("r1", "b", ttl_s=30)
    repo.release_lease("r1", "b")  # not b's to release
    assert not repo.claim("r1", "b", ttl_s=30)
    repo.release_lease("r1", "a")
    assert repo.claim("r1", "b", ttl_s=0.2)
    wait_until = utcnow() + timedelta(seconds=0.3)
    while utcnow() < wait_until:
        pass
    assert repo.claim("r1", "c", ttl_s=30)  # b's lease expired: c may take it, and b can no longer renew
    assert not repo.renew_lease("r1", "b", ttl_s=30)


def test_concurrent_claims_have_exactly_one_winner(repo: ReferralRepository) -> None:
    repo.add(referral(), actor="t")
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def contend(owner: str) -> None:
        barrier.wait()
        if repo.claim("r1", owner, ttl_s=30):
            wins.append(owner)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_consult_stores_its_job_and_moves_the_referral_in_one_go(repo: ReferralRepository) -> None:
    repo.add(referral(), actor="t")
    stored = repo.add_consult(consult(), ["bundle", "document_reference"], actor="api", profile="document")
    assert stored.status == "pending" and [s.step for s in stored.steps] == ["bundle", "document_reference"]
    assert repo.get("r1").status == "in-progress"
    with pytest.raises(Conflict):
        repo.add_consult(consult(consult_id="c2"), ["bundle"], actor="api", profile="document")
    assert [t.to_status for t in repo.history("r1")] == ["requested", "in-progress"]
    assert repo.due_referrals(utcnow()) == ["r1"]
    assert repo.claim("r1", "w", ttl_s=30)
    assert repo.due_referrals(utcnow()) == []  # leased: a sweep leaves it alone


def test_finishing_a_consult_job_completes_the_referral_once(repo: ReferralRepository) -> None:
    repo.add(referral(), actor="t")
    repo.add_consult(consult(), ["document_reference"], actor="api", profile="document")
    job = repo.next_job("r1")
    repo.complete_step(job.id, "document_reference", "DocumentReference/d1", audit=AuditEvent(
        utcnow(), "write-back", "ehr.write", "r1", "DocumentReference/d1", "POST", 201, "created"))
    repo.finish_job(job.id, "done", actor="write-back", reason="consult written back")
    repo.finish_job(job.id, "done", actor="write-back", reason="again")  # a repeat changes nothing
    assert repo.get("r1").status == "completed"
    assert [t.to_status for t in repo.history("r1")] == ["requested", "in-progress", "completed"]
    assert repo.next_job("r1") is None
    assert [(e.resource, e.http_status) for e in repo.audit("r1")] == [("DocumentReference/d1", 201)]


def test_a_failed_consult_job_fails_the_referral_mirrors_it_and_can_be_resumed(repo: ReferralRepository) -> None:
    repo.add(referral(), actor="t")
    repo.add_consult(consult(), ["document_reference"], actor="api", profile="document")
    job = repo.next_job("r1")
    repo.finish_job(job.id, "failed", actor="write-back", reason="gave up", mirror_profile="document")
    failed = repo.get("r1")
    assert failed.status == "failed" and failed.status_reason == "gave up"
    assert [j.kind for j in repo.jobs("r1")] == ["consult", "task-status"]
    resumed = repo.resume("r1", actor="api", reason="write-back resumed")
    assert resumed.status == "in-progress"
    assert repo.next_job("r1").id == job.id  # the consult job runs first again
    with pytest.raises(Conflict):
        repo.resume("r1", actor="api", reason="again")


def test_transitions_follow_the_table_and_cancel_stops_the_write_back(repo: ReferralRepository) -> None:
    repo.add(referral(), actor="t")
    with pytest.raises(Conflict):
        repo.transition("r1", "completed", actor="api")
    repo.add_consult(consult(), ["document_reference"], actor="api", profile="document")
    repo.transition("r1", "cancelled", actor="api", reason="withdrawn", mirror_profile="document")
    jobs = repo.jobs("r1")
    assert [(j.kind, j.status) for j in jobs] == [("consult", "cancelled"), ("task-status", "pending")]
    with pytest.raises(NotFound):
        repo.transition("nope", "cancelled", actor="api")


def test_no_task_mirror_without_an_ehr_task(repo: ReferralRepository) -> None:
    repo.add(referral(status="draft", ehr_task=None), actor="t")
    repo.transition("r1", "cancelled", actor="api", reason="not needed", mirror_profile="document")
    assert repo.jobs("r1") == []
