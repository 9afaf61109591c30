"""The CDS Hooks tables (own metadata, the app's engine): cards issued, feedback received, JWT ids seen.

Nothing here holds an access token; cards are kept by uuid, hook and hookInstance only (no patient data), so
feedback (CDS Hooks 2.0 §Feedback) can be tied back to the call that produced the card.
"""

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import JSON, Column, DateTime, Engine, Integer, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

metadata = MetaData()
PRUNE_MARGIN_S = 300  # seen JWT ids are kept this long past exp (more than any clock leeway)

cards_table = Table(
    "cds_card", metadata,
    Column("uuid", String(64), primary_key=True),
    Column("service_id", String(64), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("hook_instance", String(1024), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("client", String(1024)),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

feedback_table = Table(
    "cds_feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service_id", String(64), nullable=False),
    Column("card", String(256), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", JSON),
    Column("override_reason", JSON),
    Column("outcome_timestamp", DateTime(timezone=True), nullable=False),
    Column("client", String(1024)),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

seen_tokens_table = Table(
    "cds_jwt_seen", metadata,
    Column("iss", String(1024), primary_key=True),
    Column("jti", String(512), primary_key=True),
    Column("expires_at", Integer, nullable=False, index=True),  # the JWT's exp (seconds since the epoch)
)


@dataclass(frozen=True)
class Feedback:
    """One feedback entry as received."""

    card: str
    outcome: str  # accepted | overridden
    accepted_suggestions: list[str]
    override_reason: dict | None
    outcome_timestamp: datetime


@dataclass(frozen=True)
class StoredFeedback(Feedback):
    service_id: str = ""
    client: str | None = None
    card_known: bool = False  # the card uuid is one we issued


class CdsStore:
    """Typed storage for the CDS Hooks endpoints; each method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine  # the tables are made by the store's migrations (0002)

    def record_cards(self, service_id: str, hook: str, hook_instance: str, cards: list[dict],
                     client: str | None) -> None:
        """Remember the cards we answered with (uuid and indicator only)."""
        if not cards:
            return
        now = datetime.now(UTC)
        rows = [{"uuid": c["uuid"], "service_id": service_id, "hook": hook, "hook_instance": hook_instance,
                 "indicator": c["indicator"], "client": client, "issued_at": now} for c in cards]
        with self.engine.begin() as conn:
            conn.execute(insert(cards_table), rows)

    def record_feedback(self, service_id: str, entries: list[Feedback], client: str | None) -> int:
        """Store feedback entries; returns how many."""
        now = datetime.now(UTC)
        rows = [{"service_id": service_id, "card": f.card, "outcome": f.outcome,
                 "accepted_suggestions": f.accepted_suggestions or None, "override_reason": f.override_reason,
                 "outcome_timestamp": f.outcome_timestamp, "client": client, "received_at": now} for f in entries]
        with self.engine.begin() as conn:
            conn.execute(insert(feedback_table), rows)
        return len(rows)

    def feedback_for(self, card: str) -> list[StoredFeedback]:
        """Feedback received about one card, oldest first."""
        with self.engine.connect() as conn:
            known = conn.execute(select(cards_table.c.uuid).where(cards_table.c.uuid == card)).first() is not None
            rows = conn.execute(select(feedback_table).where(feedback_table.c.card == card)
                                .order_by(feedback_table.c.id)).mappings().all()
        return [StoredFeedback(card=r["card"], outcome=r["outcome"],
                               accepted_suggestions=_as_list(r["accepted_suggestions"]),
                               override_reason=r["override_reason"], outcome_timestamp=r["outcome_timestamp"],
                               service_id=r["service_id"], client=r["client"], card_known=known) for r in rows]

    def card_issued(self, card: str) -> dict | None:
        """What we stored about a card we issued, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(cards_table).where(cards_table.c.uuid == card)).mappings().first()
        return dict(row) if row else None

    def remember_jti(self, iss: str, jti: str, expires_at: int) -> bool:
        """Record a JWT id until it expires; False when the issuer used it before (a replay)."""
        now = int(time.time())
        with self.engine.begin() as conn:
            conn.execute(delete(seen_tokens_table).where(seen_tokens_table.c.expires_at < now - PRUNE_MARGIN_S))
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(seen_tokens_table).values(iss=iss, jti=jti, expires_at=expires_at))
        except IntegrityError:
            return False
        return True


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])

