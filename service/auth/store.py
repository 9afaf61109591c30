"""Server-side storage of launches and their tokens, in the service's database, tokens encrypted at rest.

The browser holds only a signed cookie with an opaque session id; rows are keyed by its SHA-256, so the
table alone lets nobody take over a session, and the tokens need the app's SECRET_KEY to be read. A table
(rather than process memory) lets the callback, the API calls and the refreshes land on any worker of any
machine, and keeps sessions across restarts.
"""

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (Boolean, Column, Engine, Float, Integer, MetaData, String, Table, Text, delete, insert,
                        select, update)

metadata = MetaData()

pending_launches = Table(
    "auth_pending_launches", metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("browser_hash", String(64), nullable=False),
    Column("iss", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # ehr | standalone
    Column("redirect_uri", Text, nullable=False),
    Column("token_endpoint", Text, nullable=False),
    Column("verifier", Text, nullable=False),  # encrypted
    Column("expires_at", Float, nullable=False),
)

launched_sessions = Table(
    "auth_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("iss", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("token_endpoint", Text, nullable=False),
    Column("patient", Text, nullable=True),
    Column("encounter", Text, nullable=True),
    Column("fhir_user", Text, nullable=True),
    Column("need_patient_banner", Boolean, nullable=False, default=True),
    Column("fhir_context", Text, nullable=True),  # JSON
    Column("scope", Text, nullable=False, default=""),
    Column("access_token", Text, nullable=False),  # encrypted
    Column("refresh_token", Text, nullable=True),  # encrypted
    Column("access_expires_at", Float, nullable=False),
    Column("generation", Integer, nullable=False, default=0),  # +1 per refresh (optimistic concurrency)
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),  # the session's own end, whatever the tokens say
    Column("ended", Boolean, nullable=False, default=False),
)

api_tokens = Table(  # access tokens we issued to server-to-server API callers (service/auth/api_tokens.py)
    "api_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("client_id", String(256), nullable=False),
    Column("scope", Text, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)


def digest(value: str) -> str:
    """SHA-256 hex of an opaque value (session ids and states are stored only as digests)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PendingLaunch:
    browser_hash: str
    iss: str
    kind: str
    redirect_uri: str
    token_endpoint: str
    verifier: str = field(repr=False)
    expires_at: float = 0.0


@dataclass(frozen=True)
class LaunchedSession:
    """A launched session: the context the EHR gave, and (never shown) its tokens."""

    iss: str
    client_id: str
    token_endpoint: str
    patient: str | None
    encounter: str | None
    fhir_user: str | None
    need_patient_banner: bool
    fhir_context: list
    scope: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    access_expires_at: float = 0.0
    generation: int = 0
    expires_at: float = 0.0


class TokenStore:
    """Pending launches and launched sessions in the service's database (tables ``auth_*``, made by the migrations)."""

    def __init__(self, engine: Engine, secret_key: bytes) -> None:
        self.engine = engine
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"second-opinion token store").derive(secret_key)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    # -- pending launches -----------------------------------------------------------------------
    def add_pending(self, state: str, launch: PendingLaunch) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(pending_launches).where(pending_launches.c.expires_at < now))
            conn.execute(insert(pending_launches).values(
                state_hash=digest(state), browser_hash=launch.browser_hash, iss=launch.iss, kind=launch.kind,
                redirect_uri=launch.redirect_uri, token_endpoint=launch.token_endpoint,
                verifier=self._seal(launch.verifier), expires_at=launch.expires_at))

    def pop_pending(self, state: str) -> PendingLaunch | None:
        """Take a pending launch by its state (single use); None when unknown, used or expired."""
        with self.engine.begin() as conn:
            row = conn.execute(select(pending_launches).where(pending_launches.c.state_hash == digest(state))).first()
            if row is None:
                return None
            deleted = conn.execute(delete(pending_launches).where(pending_launches.c.state_hash == digest(state)))
        if deleted.rowcount != 1 or row.expires_at < time.time():
            return None
        verifier = self._open(row.verifier)
        if verifier is None:
            return None
        return PendingLaunch(row.browser_hash, row.iss, row.kind, row.redirect_uri, row.token_endpoint, verifier,
                             row.expires_at)

    # -- launched sessions ----------------------------------------------------------------------
    def add_session(self, session_id: str, s: LaunchedSession) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(launched_sessions).where(launched_sessions.c.expires_at < now))
            conn.execute(insert(launched_sessions).values(
                id_hash=digest(session_id), iss=s.iss, client_id=s.client_id, token_endpoint=s.token_endpoint,
                patient=s.patient, encounter=s.encounter, fhir_user=s.fhir_user,
                need_patient_banner=s.need_patient_banner, fhir_context=json.dumps(s.fhir_context), scope=s.scope,
                access_token=self._seal(s.access_token),
                refresh_token=self._seal(s.refresh_token) if s.refresh_token else None,
                access_expires_at=s.access_expires_at, generation=0, created_at=now, expires_at=s.expires_at,
                ended=False))

    def find_session(self, session_id: str) -> LaunchedSession | None:
        """The live session with this id; None when unknown, ended or past its end."""
        with self.engine.connect() as conn:
            row = conn.execute(select(launched_sessions)
                               .where(launched_sessions.c.id_hash == digest(session_id))).first()
        if row is None or row.ended or row.expires_at < time.time():
            return None
        access = self._open(row.access_token)
        if access is None:  # sealed with another SECRET_KEY
            return None
        return LaunchedSession(
            iss=row.iss, client_id=row.client_id, token_endpoint=row.token_endpoint, patient=row.patient,
            encounter=row.encounter, fhir_user=row.fhir_user, need_patient_banner=bool(row.need_patient_banner),
            fhir_context=json.loads(row.fhir_context or "[]"), scope=row.scope, access_token=access,
            refresh_token=self._open(row.refresh_token) if row.refresh_token else None,
            access_expires_at=row.access_expires_at, generation=row.generation, expires_at=row.expires_at)

    def update_tokens(self, session_id: str, generation: int, *, access_token: str, refresh_token: str | None,
                      access_expires_at: float, scope: str) -> bool:
        """Store refreshed tokens if nobody refreshed since ``generation``; False when someone did."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(launched_sessions)
                .where(launched_sessions.c.id_hash == digest(session_id),
                       launched_sessions.c.generation == generation)
                .values(access_token=self._seal(access_token),
                        refresh_token=self._seal(refresh_token) if refresh_token else None,
                        access_expires_at=access_expires_at, scope=scope, generation=generation + 1))
        return result.rowcount == 1

    def end_session(self, session_id: str) -> None:
        """Forget a session's tokens (logout, or its refresh token is dead)."""
        with self.engine.begin() as conn:
            conn.execute(update(launched_sessions).where(launched_sessions.c.id_hash == digest(session_id))
                         .values(ended=True, access_token="", refresh_token=None))

    def _seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def _open(self, sealed: str) -> str | None:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            return None
