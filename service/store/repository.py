"""The only code that knows storage: referrals, transitions, consults, the write-back outbox and the audit trail."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, event, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.lifecycle import check_transition
from service.store.models import AuditRow, ConsultRow, ReferralRow, TransitionRow, WritebackJobRow, WritebackStepRow

EXTENSION = "second_opinion.repository"

JOB_CONSULT = "consult"
JOB_TASK_STATUS = "task-status"
STEP_TASK_STATUS = "task_status"
CONSULT_STATUS_FOR_JOB = {"pending": "pending", "done": "written", "failed": "failed", "cancelled": "cancelled"}


@dataclass(frozen=True)
class Referral:
    id: str
    patient_id: str
    ehr_base_url: str
    status: str
    question: str
    patient_questions: list[str]
    exclude: list[str]
    excluded: list[str]
    warnings: list[str]
    counts: dict[str, int]
    packet_identifier: str
    packet_json: str
    service_request_json: str
    task_json: str
    ehr_service_request: str | None
    ehr_task: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    readiness: list[dict] = field(default_factory=list)
    since: str | None = None
    status_reason: str | None = None
    consultant_id: str | None = None


@dataclass(frozen=True)
class Transition:
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class WritebackStep:
    step: str
    status: str
    location: str | None
    done_at: datetime | None


@dataclass(frozen=True)
class WritebackJob:
    id: int
    referral_id: str
    consult_id: str | None
    kind: str
    profile: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    budget_started_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    finished_at: datetime | None
    steps: list[WritebackStep] = field(default_factory=list)

    @property
    def done(self) -> dict[str, str | None]:
        """Locations of the steps that succeeded, by step name."""
        return {s.step: s.location for s in self.steps if s.status == "done"}


@dataclass(frozen=True)
class Consult:
    id: str
    referral_id: str
    received_at: datetime
    content_type: str
    source: str
    document_json: str
    document_reference_json: str
    status: str  # pending | written | failed | cancelled (its write-back job's status)
    last_error: str | None
    attempts: int
    steps: list[WritebackStep] = field(default_factory=list)
    profile: str | None = None
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    actor: str
    action: str
    referral_id: str
    resource: str | None
    method: str | None
    http_status: int | None
    detail: str | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class ReferralRepository:
    """Typed storage operations; each runs in its own short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.skip_locked = engine.dialect.name == "postgresql"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- referrals ---------------------------------------------------------------------------------
    def add(self, referral: Referral, *, actor: str) -> Referral:
        """Store a new referral and its first transition (to its initial status)."""
        with self._session() as s:
            s.add(ReferralRow(**referral.__dict__))
            s.add(TransitionRow(referral_id=referral.id, from_status=None, to_status=referral.status,
                                actor=actor, reason="created", at=referral.created_at))
        return referral

    def get(self, referral_id: str) -> Referral:
        """The referral, or NotFound."""
        with self._session() as s:
            return _referral(_referral_row(s, referral_id))

    def find_referrals(self, patient_id: str) -> list[Referral]:
        """A patient's referrals, newest first (callers keep those of the EHR they are working with)."""
        with self._session() as s:
            rows = s.scalars(select(ReferralRow).where(ReferralRow.patient_id == patient_id)
                             .order_by(ReferralRow.created_at.desc())).all()
            return [_referral(row) for row in rows]

    def transition(self, referral_id: str, target: str, *, actor: str, reason: str | None = None,
                   mirror_profile: str | None = None, **changes: object) -> Referral:
        """Move a referral to target (checked against the state machine), with other column changes, atomically.

        With mirror_profile, a Task status write-back job is queued in the same transaction (the EHR's Task
        follows our status). Cancelling stops any consult write-back that has not finished.
        """
        with self._session() as s:
            row = _referral_row(s, referral_id)
            _move(s, row, target, actor=actor, reason=reason, **changes)
            if target == "cancelled":
                s.execute(update(WritebackJobRow)
                          .where(WritebackJobRow.referral_id == referral_id, WritebackJobRow.status == "pending",
                                 WritebackJobRow.kind == JOB_CONSULT)
                          .values(status="cancelled", finished_at=utcnow(), last_error="referral cancelled"))
            if mirror_profile is not None and row.ehr_task:
                _add_job(s, referral_id, None, JOB_TASK_STATUS, mirror_profile, [STEP_TASK_STATUS])
        return self.get(referral_id)

    def history(self, referral_id: str) -> list[Transition]:
        """Every transition of a referral, oldest first."""
        self.get(referral_id)
        with self._session() as s:
            rows = s.scalars(select(TransitionRow).where(TransitionRow.referral_id == referral_id)
                             .order_by(TransitionRow.id))
            return [Transition(r.from_status, r.to_status, r.actor, r.reason, r.at) for r in rows]

    # -- consults ----------------------------------------------------------------------------------
    def add_consult(self, consult: Consult, steps: list[str], *, actor: str, profile: str) -> Consult:
        """Store a consult, its write-back job and steps, and the referral's move to in-progress, atomically.

        A referral the consultant already started (in-progress) stays in-progress.
        """
        try:
            with self._session() as s:
                row = _referral_row(s, consult.referral_id)
                if s.scalar(select(ConsultRow.id).where(ConsultRow.referral_id == consult.referral_id)):
                    raise Conflict(f"referral {consult.referral_id} already has a consult")
                if row.status != "in-progress":
                    _move(s, row, "in-progress", actor=actor, reason="consult received")
                s.add(ConsultRow(id=consult.id, referral_id=consult.referral_id, received_at=consult.received_at,
                                 content_type=consult.content_type, source=consult.source,
                                 document_json=consult.document_json,
                                 document_reference_json=consult.document_reference_json))
                s.flush()
                _add_job(s, consult.referral_id, consult.id, JOB_CONSULT, profile, steps)
        except IntegrityError as exc:  # a concurrent consult for the same referral won the race
            raise Conflict(f"referral {consult.referral_id} already has a consult") from exc
        return self.get_consult(consult.referral_id)

    def find_consult(self, referral_id: str) -> Consult | None:
        """The referral's consult, or None."""
        with self._session() as s:
            row = s.scalar(select(ConsultRow).where(ConsultRow.referral_id == referral_id))
            return None if row is None else _consult(s, row)

    def get_consult(self, referral_id: str) -> Consult:
        """The referral's consult, or NotFound."""
        consult = self.find_consult(referral_id)
        if consult is None:
            raise NotFound(f"referral {referral_id} has no consult")
        return consult

    def get_consult_by_id(self, consult_id: str) -> Consult:
        with self._session() as s:
            row = s.get(ConsultRow, consult_id)
            if row is None:
                raise NotFound(f"no consult {consult_id}")
            return _consult(s, row)

    # -- the write-back outbox ---------------------------------------------------------------------
    def next_job(self, referral_id: str) -> WritebackJob | None:
        """The referral's oldest unfinished write-back job (jobs of one referral run in order)."""
        with self._session() as s:
            row = s.scalar(select(WritebackJobRow)
                           .where(WritebackJobRow.referral_id == referral_id, WritebackJobRow.status == "pending")
                           .order_by(WritebackJobRow.id).limit(1))
            return None if row is None else _job(s, row)

    def jobs(self, referral_id: str) -> list[WritebackJob]:
        """Every write-back job of a referral, oldest first."""
        with self._session() as s:
            rows = s.scalars(select(WritebackJobRow).where(WritebackJobRow.referral_id == referral_id)
                             .order_by(WritebackJobRow.id))
            return [_job(s, row) for row in rows]

    def due_referrals(self, now: datetime, limit: int = 500) -> list[str]:
        """Referrals with a pending job that is due and no live lease: what a sweep re-enqueues."""
        with self._session() as s:
            query = (select(WritebackJobRow.referral_id)
                     .join(ReferralRow, ReferralRow.id == WritebackJobRow.referral_id)
                     .where(WritebackJobRow.status == "pending", WritebackJobRow.next_attempt_at <= now,
                            _lease_free(now))
                     .group_by(WritebackJobRow.referral_id)
                     .order_by(func.min(WritebackJobRow.id)).limit(limit))
            return list(s.scalars(query))

    def pending_count(self) -> int:
        """How many write-back jobs have not finished."""
        with self._session() as s:
            return s.scalar(select(func.count()).select_from(WritebackJobRow)
                            .where(WritebackJobRow.status == "pending")) or 0

    def claim(self, referral_id: str, owner: str, ttl_s: float) -> bool:
        """Take the referral's write-back lease if it is free or expired; False when another worker holds it.

        On PostgreSQL the row is first locked with FOR UPDATE SKIP LOCKED, so a worker never waits on another;
        the conditional UPDATE is what decides, on every database.
        """
        now = utcnow()
        with self._session() as s:
            if self.skip_locked:
                locked = s.scalar(select(ReferralRow.id).where(ReferralRow.id == referral_id, _lease_free(now))
                                  .with_for_update(skip_locked=True))
                if locked is None:
                    return False
            result = s.execute(update(ReferralRow).where(ReferralRow.id == referral_id, _lease_free(now))
                               .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_s)))
            return result.rowcount == 1

    def renew_lease(self, referral_id: str, owner: str, ttl_s: float) -> bool:
        """Extend our lease; False when it was lost (expired and taken by another worker)."""
        now = utcnow()
        with self._session() as s:
            result = s.execute(update(ReferralRow)
                               .where(ReferralRow.id == referral_id, ReferralRow.lease_owner == owner,
                                      ReferralRow.lease_expires_at > now)
                               .values(lease_expires_at=now + timedelta(seconds=ttl_s)))
            return result.rowcount == 1

    def release_lease(self, referral_id: str, owner: str) -> None:
        """Give the lease up (only if we still hold it)."""
        with self._session() as s:
            s.execute(update(ReferralRow).where(ReferralRow.id == referral_id, ReferralRow.lease_owner == owner)
                      .values(lease_owner=None, lease_expires_at=None))

    def lease_expiry(self, referral_id: str) -> datetime | None:
        """When the referral's current lease runs out (None when nobody holds it)."""
        with self._session() as s:
            value = s.scalar(select(ReferralRow.lease_expires_at).where(ReferralRow.id == referral_id))
            return None if value is None else aware(value)

    def complete_step(self, job_id: int, step: str, location: str | None, *, audit: AuditEvent | None = None) -> None:
        """Record that one write-back step succeeded (before the next one starts), with its audit entry."""
        with self._session() as s:
            s.execute(update(WritebackStepRow)
                      .where(WritebackStepRow.job_id == job_id, WritebackStepRow.step == step)
                      .values(status="done", location=location, done_at=utcnow()))
            if audit is not None:
                s.add(_audit_row(audit))

    def record_attempt(self, job_id: int, error: str, next_attempt_at: datetime,
                       *, audit: AuditEvent | None = None) -> None:
        """Count a failed attempt, keep its error (no patient data) and when to try again."""
        with self._session() as s:
            row = s.get(WritebackJobRow, job_id)
            row.attempts += 1
            row.last_error = error
            row.last_attempt_at = utcnow()
            row.next_attempt_at = next_attempt_at
            if audit is not None:
                s.add(_audit_row(audit))

    def finish_job(self, job_id: int, status: str, *, actor: str, reason: str | None = None,
                   mirror_profile: str | None = None, audit: AuditEvent | None = None) -> None:
        """Close a job (done or failed); a consult job moves its referral to completed or failed, atomically.

        A referral that was cancelled meanwhile keeps its status. With mirror_profile, a failed referral gets a
        Task status job (the EHR's Task shows the failure).
        """
        with self._session() as s:
            job = s.get(WritebackJobRow, job_id)
            if job.status != "pending":
                return
            job.status = status
            job.finished_at = utcnow()
            if status == "done":
                job.last_error = None
            else:
                job.attempts += 1
                job.last_error = reason
                job.last_attempt_at = job.finished_at
            if audit is not None:
                s.add(_audit_row(audit))
            if job.kind != JOB_CONSULT:
                return
            referral = _referral_row(s, job.referral_id)
            if referral.status != "in-progress":
                return
            target = "completed" if status == "done" else "failed"
            _move(s, referral, target, actor=actor, reason=reason)
            if target == "failed" and mirror_profile is not None and referral.ehr_task:
                _add_job(s, referral.id, None, JOB_TASK_STATUS, mirror_profile, [STEP_TASK_STATUS])

    def resume(self, referral_id: str, *, actor: str, reason: str, mirror_profile: str | None = None) -> Referral:
        """Resume a failed write-back: failed → in-progress, its failed consult job pending again with a new budget."""
        now = utcnow()
        with self._session() as s:
            row = _referral_row(s, referral_id)
            if row.status != "failed":
                raise Conflict(f"only a failed referral can be retried; this one is {row.status}")
            failed = s.scalar(select(WritebackJobRow)
                              .where(WritebackJobRow.referral_id == referral_id, WritebackJobRow.kind == JOB_CONSULT,
                                     WritebackJobRow.status == "failed")
                              .order_by(WritebackJobRow.id.desc()).limit(1))
            if failed is None:
                raise Conflict(f"referral {referral_id} has no failed write-back to retry")
            _move(s, row, "in-progress", actor=actor, reason=reason)
            failed.status = "pending"
            failed.finished_at = None
            failed.budget_started_at = now
            failed.next_attempt_at = now
            if mirror_profile is not None and row.ehr_task:
                _add_job(s, referral_id, None, JOB_TASK_STATUS, mirror_profile, [STEP_TASK_STATUS])
        return self.get(referral_id)

    # -- audit -------------------------------------------------------------------------------------
    def record_audit(self, event: AuditEvent) -> None:
        """Append one audit entry."""
        with self._session() as s:
            s.add(_audit_row(event))

    def audit(self, referral_id: str) -> list[AuditEvent]:
        """A referral's audit trail, oldest first."""
        self.get(referral_id)
        with self._session() as s:
            rows = s.scalars(select(AuditRow).where(AuditRow.referral_id == referral_id).order_by(AuditRow.id))
            return [AuditEvent(aware(r.at), r.actor, r.action, r.referral_id, r.resource, r.method, r.http_status,
                               r.detail) for r in rows]


def _referral_row(s: Session, referral_id: str) -> ReferralRow:
    row = s.get(ReferralRow, referral_id)
    if row is None:
        raise NotFound(f"no referral {referral_id}")
    return row


def _move(s: Session, row: ReferralRow, target: str, *, actor: str, reason: str | None, **changes: object) -> None:
    """Apply one checked transition to a loaded referral row and record it; Conflict if it changed meanwhile."""
    current = row.status
    check_transition(current, target)
    now = utcnow()
    result = s.execute(update(ReferralRow).where(ReferralRow.id == row.id, ReferralRow.status == current)
                       .values(status=target, updated_at=now, status_reason=reason, **changes)
                       .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise Conflict(f"referral {row.id} changed while being updated; try again")
    s.add(TransitionRow(referral_id=row.id, from_status=current, to_status=target, actor=actor, reason=reason, at=now))
    s.expire(row)


def _add_job(s: Session, referral_id: str, consult_id: str | None, kind: str, profile: str, steps: list[str]) -> None:
    now = utcnow()
    job = WritebackJobRow(referral_id=referral_id, consult_id=consult_id, kind=kind, profile=profile,
                          status="pending", attempts=0, created_at=now, budget_started_at=now, next_attempt_at=now)
    s.add(job)
    s.flush()
    for position, step in enumerate(steps):
        s.add(WritebackStepRow(job_id=job.id, step=step, position=position, status="pending"))


def _lease_free(now: datetime):  # noqa: ANN202 - a SQLAlchemy condition
    return or_(ReferralRow.lease_expires_at.is_(None), ReferralRow.lease_expires_at <= now)


def _referral(row: ReferralRow) -> Referral:
    return Referral(**{name: getattr(row, name) for name in Referral.__dataclass_fields__})


def _steps(s: Session, job_id: int) -> list[WritebackStep]:
    rows = s.scalars(select(WritebackStepRow).where(WritebackStepRow.job_id == job_id)
                     .order_by(WritebackStepRow.position))
    return [WritebackStep(x.step, x.status, x.location, x.done_at) for x in rows]


def _job(s: Session, row: WritebackJobRow) -> WritebackJob:
    return WritebackJob(
        id=row.id, referral_id=row.referral_id, consult_id=row.consult_id, kind=row.kind, profile=row.profile,
        status=row.status, attempts=row.attempts, last_error=row.last_error, created_at=aware(row.created_at),
        budget_started_at=aware(row.budget_started_at), next_attempt_at=aware(row.next_attempt_at),
        last_attempt_at=aware(row.last_attempt_at) if row.last_attempt_at else None,
        finished_at=aware(row.finished_at) if row.finished_at else None, steps=_steps(s, row.id))


def _consult(s: Session, row: ConsultRow) -> Consult:
    job = s.scalar(select(WritebackJobRow).where(WritebackJobRow.consult_id == row.id)
                   .order_by(WritebackJobRow.id.desc()).limit(1))
    return Consult(
        id=row.id, referral_id=row.referral_id, received_at=row.received_at, content_type=row.content_type,
        source=row.source, document_json=row.document_json, document_reference_json=row.document_reference_json,
        status=CONSULT_STATUS_FOR_JOB[job.status] if job else "pending", last_error=job.last_error if job else None,
        attempts=job.attempts if job else 0, steps=_steps(s, job.id) if job else [],
        profile=job.profile if job else None,
        next_attempt_at=aware(job.next_attempt_at) if job and job.status == "pending" else None,
        last_attempt_at=aware(job.last_attempt_at) if job and job.last_attempt_at else None)


def _audit_row(event: AuditEvent) -> AuditRow:
    return AuditRow(at=event.at, actor=event.actor, action=event.action, referral_id=event.referral_id,
                    resource=event.resource, method=event.method, http_status=event.http_status,
                    detail=(event.detail or "")[:512] or None)


def build_engine(url: str) -> Engine:
    """An engine for the URL. SQLite: WAL, a busy timeout, and BEGIN IMMEDIATE so concurrent writers queue up
    instead of failing; parameters are never shown in error messages (they can hold patient data)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below starts transactions
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def database_url(app: Flask) -> str:
    """The configured SQLAlchemy URL; by default a SQLite file in the instance folder."""
    return app.config.get("DATABASE_URL") or f"sqlite:///{Path(app.instance_path) / 'second-opinion.sqlite3'}"


def init_app(app: Flask) -> None:
    """Create the engine and bring the schema up to date where allowed (SQLite by default), else check it."""
    from service.store import migrations

    url = database_url(app)
    engine = build_engine(url)
    auto = app.config.get("DATABASE_AUTO_UPGRADE")
    if auto is None:
        auto = engine.dialect.name == "sqlite"
    try:
        if auto:
            migrations.upgrade(engine)
        else:
            migrations.require_current(engine)
    except Exception:
        engine.dispose()
        raise
    app.extensions[EXTENSION] = ReferralRepository(engine)


def get_repository(app: Flask | None = None) -> ReferralRepository:
    return (app or current_app).extensions[EXTENSION]


