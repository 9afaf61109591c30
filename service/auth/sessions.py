"""The launched session of the current request, and its tokens: refreshed before expiry, on a 401, with rotation."""

import logging
import threading
import time
import weakref

import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from flask import g, has_request_context, session

from service.auth.store import LaunchedSession, TokenStore
from service.errors import Unauthorized, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

SESSION_KEY = "sid"  # the only thing the browser's cookie holds: an opaque id
DEAD_GRANT_ERRORS = frozenset({"invalid_grant", "invalid_token", "unauthorized_client", "invalid_client"})


class LaunchExpired(Unauthorized):
    """The launch can no longer reach the EHR (refresh token expired or revoked): the user must launch again."""


RELAUNCH = "please launch the app again from the EHR"


def current_launch(store: TokenStore) -> tuple[str, LaunchedSession] | None:
    """The live launched session of this request's browser (cached per request), or None."""
    if not has_request_context():
        return None
    if "so_launch" not in g:
        session_id = session.get(SESSION_KEY)
        found = store.find_session(session_id) if isinstance(session_id, str) and session_id else None
        g.so_launch = (session_id, found) if found is not None else None
    return g.so_launch


_locks: "weakref.WeakValueDictionary[str, threading.Lock]" = weakref.WeakValueDictionary()
_locks_guard = threading.Lock()


def _session_lock(session_id: str) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(session_id)
        if lock is None:
            lock = threading.Lock()
            _locks[session_id] = lock
        return lock


class SessionTokens:
    """The TokenSource of one launched session (see service.auth.http)."""

    def __init__(self, store: TokenStore, session_id: str, launched: LaunchedSession, *, margin_s: float,
                 timeout: float) -> None:
        self._store, self._id, self._launched = store, session_id, launched
        self._margin, self._timeout = margin_s, timeout

    def access_token(self) -> str:
        launched = self._launched
        if launched.access_expires_at - self._margin > time.time():
            return launched.access_token
        return self._refresh(launched.access_token)

    def renew(self, stale: str) -> str | None:
        return self._refresh(stale, refused=True)

    def _refresh(self, stale: str, *, refused: bool = False) -> str:
        lock = _session_lock(self._id)
        with lock:
            current = self._store.find_session(self._id)
            if current is None:
                raise LaunchExpired(f"your session with the EHR has ended; {RELAUNCH}")
            fresh_enough = current.access_expires_at - self._margin > time.time()
            if current.access_token != stale and fresh_enough:
                self._launched = current  # another request (or worker) refreshed meanwhile
                return current.access_token
            if not current.refresh_token:
                self._store.end_session(self._id)
                raise LaunchExpired(f"the EHR's access token {'was refused' if refused else 'expired'} and it "
                                    f"gave no refresh token; {RELAUNCH}")
            token = self._request_refresh(current)
            if token is None:  # the refresh token is dead; unless another worker rotated it just now
                again = self._store.find_session(self._id)
                if again is not None and again.generation != current.generation:
                    self._launched = again
                    return again.access_token
                self._store.end_session(self._id)
                raise LaunchExpired(f"your session with the EHR has expired (the EHR refused to refresh it); "
                                    f"{RELAUNCH}")
            access, refresh = token["access_token"], token.get("refresh_token") or current.refresh_token
            expires_at = time.time() + float(token.get("expires_in") or 3600)
            scope = str(token.get("scope") or current.scope)
            if not self._store.update_tokens(self._id, current.generation, access_token=access,
                                             refresh_token=refresh, access_expires_at=expires_at, scope=scope):
                latest = self._store.find_session(self._id)
                if latest is None:
                    raise LaunchExpired(f"your session with the EHR has ended; {RELAUNCH}")
                self._launched = latest
                return latest.access_token
            log.info("refreshed the EHR access token of a launched session (rotated: %s)",
                     "yes" if token.get("refresh_token") else "no")
            self._launched = self._store.find_session(self._id) or current
            return access

    def _request_refresh(self, current: LaunchedSession) -> dict | None:
        """The token endpoint's answer to a refresh; None when it says the grant is dead."""
        oauth = OAuth2Session(client_id=current.client_id, token_endpoint_auth_method="none",
                              default_timeout=self._timeout)
        try:
            token = oauth.refresh_token(current.token_endpoint, refresh_token=current.refresh_token)
        except OAuthError as exc:
            if exc.error in DEAD_GRANT_ERRORS:
                log.warning("the EHR refused to refresh a launched session: %s", exc.error)
                return None
            raise UpstreamError(f"the EHR's token endpoint failed to refresh the session: {exc.error}",
                                upstream_status=502) from exc
        except requests.Timeout as exc:
            raise UpstreamTimeout("the EHR's token endpoint did not answer a refresh in time") from exc
        except (requests.RequestException, ValueError) as exc:
            raise UpstreamError(f"the EHR's token endpoint failed to refresh the session: {type(exc).__name__}",
                                upstream_status=502) from exc
        finally:
            oauth.close()
        if not isinstance(token.get("access_token"), str):
            raise UpstreamError("the EHR's token endpoint answered a refresh without an access token",
                                upstream_status=502)
        return dict(token)
