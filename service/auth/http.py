"""Bearer tokens on EHR requests: attached per request, renewed before expiry, and once more after a 401."""

from typing import Protocol

import requests
from requests.auth import AuthBase

RETRIED = "_second_opinion_retried"


class TokenSource(Protocol):
    def access_token(self) -> str:
        """A token to send now (renewed first when it is about to expire)."""

    def renew(self, stale: str) -> str | None:
        """A new token after the server refused ``stale``; None when there is none to be had."""


class RenewingBearerAuth(AuthBase):
    """``Authorization: Bearer`` from a TokenSource; a 401 answer is retried once with a renewed token."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.source.access_token()}"
        request.register_hook("response", self._retry_after_401)
        return request

    def _retry_after_401(self, response: requests.Response, **send_options: object) -> requests.Response:
        sent = response.request
        if response.status_code != 401 or getattr(sent, RETRIED, False):
            return response
        stale = (sent.headers.get("Authorization") or "").removeprefix("Bearer ")
        try:
            fresh = self.source.renew(stale)
        except BaseException:
            response.close()  # give the connection back before the error (e.g. "launch again") leaves
            raise
        if not fresh or fresh == stale:
            return response
        response.content  # noqa: B018 - read the body so the connection goes back to the pool
        response.close()
        retry = sent.copy()
        retry.headers["Authorization"] = f"Bearer {fresh}"
        setattr(retry, RETRIED, True)
        answer = response.connection.send(retry, **send_options)
        answer.history.append(response)
        answer.request = retry
        return answer


class StaticBearerAuth(AuthBase):
    """A fixed bearer token (open sandboxes, or a token the EHR issued out of band)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "StaticBearerAuth(<token>)"


def session_with_auth(shared: requests.Session, auth: AuthBase) -> requests.Session:
    """A session that shares ``shared``'s connection pools, retry rules and headers, with its own auth."""
    view = requests.Session()
    view.adapters = shared.adapters  # the same HTTPAdapter objects: one pool per app, one retry policy
    view.headers = shared.headers.copy()
    view.auth = auth
    return view
