"""SQLAlchemy tables: referrals, their transitions, consults and the write-back outbox."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
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
    document_reference_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))  # pending | written | failed
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class WritebackStepRow(Base):
    __tablename__ = "writeback_steps"
    __table_args__ = (UniqueConstraint("consult_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consult_id: Mapped[str] = mapped_column(ForeignKey("consults.id"), index=True)
    step: Mapped[str] = mapped_column(String(32))  # bundle | document_reference | task
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | done
    location: Mapped[str | None] = mapped_column(String(256))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
