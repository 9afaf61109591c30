"""SQLAlchemy tables: referrals, their transitions, consults, the write-back outbox and the audit trail.

The schema is created and changed only by the Alembic migrations in service/store/migrations/.
"""

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ReferralRow(Base):
    __tablename__ = "referrals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    ehr_base_url: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(32), index=True)
    question: Mapped[str] = mapped_column(Text)
    patient_questions: Mapped[list] = mapped_column(JSON, default=list)
    exclude: Mapped[list] = mapped_column(JSON, default=list)
    excluded: Mapped[list] = mapped_column(JSON, default=list)
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    readiness: Mapped[list] = mapped_column(JSON, default=list)  # the packet's readiness checks (mappers.readiness)
    since: Mapped[str | None] = mapped_column(String(10))  # history before this date (YYYY-MM-DD) left out
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    packet_identifier: Mapped[str] = mapped_column(String(128))
    packet_json: Mapped[str] = mapped_column(Text)
    service_request_json: Mapped[str] = mapped_column(Text)
    task_json: Mapped[str] = mapped_column(Text)
    ehr_service_request: Mapped[str | None] = mapped_column(String(256))
    ehr_task: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_reason: Mapped[str | None] = mapped_column(Text)  # why the referral is in its status (failed, rejected...)
    consultant_id: Mapped[str | None] = mapped_column(String(64))  # the configured consultant asked (CONSULTANTS)
    # The write-back lease: the one worker allowed to run this referral's outbox jobs, until it expires.
    lease_owner: Mapped[str | None] = mapped_column(String(160))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TransitionRow(Base):
    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsultRow(Base):
    __tablename__ = "consults"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), unique=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    content_type: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)  # the body as received
    document_json: Mapped[str] = mapped_column(Text)  # our consult document Bundle
    document_reference_json: Mapped[str] = mapped_column(Text)  # shaped by the write-back profile


class WritebackJobRow(Base):
    """One outbox entry: a unit of write-back (a consult, or a Task status mirror), run step by step."""

    __tablename__ = "writeback_jobs"
    __table_args__ = (Index("ix_writeback_jobs_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # also the run order
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"), index=True)
    consult_id: Mapped[str | None] = mapped_column(ForeignKey("consults.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # consult | task-status
    profile: Mapped[str] = mapped_column(String(32))  # the write-back profile it was created under
    status: Mapped[str] = mapped_column(String(16))  # pending | done | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)  # diagnostics only, never patient data
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    budget_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # reset by a manual retry
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WritebackStepRow(Base):
    __tablename__ = "writeback_steps"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("writeback_jobs.id"), index=True)
    step: Mapped[str] = mapped_column(String(32))  # bundle | document_reference | task | provenance | task_status
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | done
    location: Mapped[str | None] = mapped_column(String(256))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditRow(Base):
    """Who read a packet or consult, and every write to the EHR: ids, references and statuses, no PHI."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))  # packet.read | consult.read | ehr.write
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str | None] = mapped_column(String(256))  # "DocumentReference/123", or the type on failure
    method: Mapped[str | None] = mapped_column(String(8))
    http_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(512))  # diagnostics, never patient data
