"""The only code that knows storage: referrals, transitions, consults and the write-back outbox."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine, event, select, update
from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.lifecycle import check_transition
from service.store.models import Base, ConsultRow, ReferralRow, TransitionRow, WritebackStepRow

EXTENSION = "second_opinion.repository"


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
class Consult:
    id: str
    referral_id: str
    received_at: datetime
    content_type: str
    source: str
    document_json: str
    document_reference_json: str
    status: str
    last_error: str | None
    attempts: int
    steps: list[WritebackStep] = field(default_factory=list)


def utcnow() -> datetime:
    return datetime.now(UTC)


class ReferralRepository:
    """Typed storage operations; each runs in its own short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
            row = s.get(ReferralRow, referral_id)
            if row is None:
                raise NotFound(f"no referral {referral_id}")
            return _referral(row)

    def transition(self, referral_id: str, target: str, *, actor: str, reason: str | None = None,
                   **changes: object) -> Referral:
        """Move a referral to target (checked against the state machine), with other column changes, atomically."""
        with self._session() as s:
            row = s.get(ReferralRow, referral_id)
            if row is None:
                raise NotFound(f"no referral {referral_id}")
            current = row.status
            check_transition(current, target)
            now = utcnow()
            result = s.execute(update(ReferralRow)
                               .where(ReferralRow.id == referral_id, ReferralRow.status == current)
                               .values(status=target, updated_at=now, **changes))
            if result.rowcount != 1:
                raise Conflict(f"referral {referral_id} changed while being updated; try again")
            s.add(TransitionRow(referral_id=referral_id, from_status=current, to_status=target, actor=actor,
                                reason=reason, at=now))
        return self.get(referral_id)

    def history(self, referral_id: str) -> list[Transition]:
        """Every transition of a referral, oldest first."""
        self.get(referral_id)
        with self._session() as s:
            rows = s.scalars(select(TransitionRow).where(TransitionRow.referral_id == referral_id)
                             .order_by(TransitionRow.id))
            return [Transition(r.from_status, r.to_status, r.actor, r.reason, r.at) for r in rows]

    # -- consults and the outbox -------------------------------------------------------------------
    def add_consult(self, consult: Consult, steps: list[str], *, actor: str) -> Consult:
        """Store a consult, its write-back steps and the referral's move to in-progress in one transaction."""
        with self._session() as s:
            row = s.get(ReferralRow, consult.referral_id)
            if row is None:
                raise NotFound(f"no referral {consult.referral_id}")
            if s.scalar(select(ConsultRow.id).where(ConsultRow.referral_id == consult.referral_id)):
                raise Conflict(f"referral {consult.referral_id} already has a consult")
            check_transition(row.status, "in-progress")
            now = utcnow()
            s.execute(update(ReferralRow).where(ReferralRow.id == row.id, ReferralRow.status == row.status)
                      .values(status="in-progress", updated_at=now))
            s.add(TransitionRow(referral_id=row.id, from_status=row.status, to_status="in-progress",
                                actor=actor, reason="consult received", at=now))
            s.add(ConsultRow(**{k: v for k, v in consult.__dict__.items() if k != "steps"}))
            for position, step in enumerate(steps):
                s.add(WritebackStepRow(consult_id=consult.id, step=step, position=position, status="pending"))
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

    def pending_consult_ids(self) -> list[str]:
        """Consults whose write-back has not finished (to resume after a restart)."""
        with self._session() as s:
            return list(s.scalars(select(ConsultRow.id).where(ConsultRow.status == "pending")
                                  .order_by(ConsultRow.received_at)))

    def complete_step(self, consult_id: str, step: str, location: str | None) -> None:
        """Record that one write-back step succeeded (before the next one starts)."""
        with self._session() as s:
            s.execute(update(WritebackStepRow)
                      .where(WritebackStepRow.consult_id == consult_id, WritebackStepRow.step == step)
                      .values(status="done", location=location, done_at=utcnow()))

    def record_attempt(self, consult_id: str, error: str | None) -> None:
        """Count a write-back attempt and keep its error (no patient data in it)."""
        with self._session() as s:
            row = s.get(ConsultRow, consult_id)
            row.attempts += 1
            row.last_error = error

    def finish_consult(self, consult_id: str, status: str, *, actor: str, reason: str | None = None) -> None:
        """Close a consult's write-back and move its referral to completed or failed, atomically."""
        target = "completed" if status == "written" else "failed"
        with self._session() as s:
            consult = s.get(ConsultRow, consult_id)
            referral = s.get(ReferralRow, consult.referral_id)
            check_transition(referral.status, target)
            now = utcnow()
            consult.status = status
            if status == "failed":
                consult.last_error = reason
            else:
                consult.last_error = None
            s.execute(update(ReferralRow).where(ReferralRow.id == referral.id,
                                                 ReferralRow.status == referral.status)
                      .values(status=target, updated_at=now))
            s.add(TransitionRow(referral_id=referral.id, from_status=referral.status, to_status=target,
                                actor=actor, reason=reason, at=now))


def _referral(row: ReferralRow) -> Referral:
    return Referral(**{name: getattr(row, name) for name in Referral.__dataclass_fields__})


def _consult(s: Session, row: ConsultRow) -> Consult:
    steps = s.scalars(select(WritebackStepRow).where(WritebackStepRow.consult_id == row.id)
                      .order_by(WritebackStepRow.position))
    fields = {name: getattr(row, name) for name in Consult.__dataclass_fields__ if name != "steps"}
    return Consult(**fields, steps=[WritebackStep(x.step, x.status, x.location, x.done_at) for x in steps])


def build_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL and a busy timeout so threads can share it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def init_app(app: Flask) -> None:
    """Create the engine (SQLite under the instance folder by default) and the schema."""
    url = app.config.get("DATABASE_URL") or f"sqlite:///{Path(app.instance_path) / 'second-opinion.sqlite3'}"
    engine = build_engine(url)
    Base.metadata.create_all(engine)
    app.extensions[EXTENSION] = ReferralRepository(engine)


def get_repository(app: Flask | None = None) -> ReferralRepository:
    return (app or current_app).extensions[EXTENSION]
