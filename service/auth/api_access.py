"""What each API route needs from a server-to-server caller (``API_AUTH=token``), and the check itself.

Deny by default: a request without a launched session must carry an access token (service/auth/api_tokens.py)
whose scopes cover the route's entry in ``REQUIRED_SCOPES``; a route with no entry is refused to API callers, so a
new route cannot slip through (a test walks the URL map). Scopes are SMART system scopes on the FHIR resources
each route reads or writes: the referral is a ServiceRequest, its workflow a Task, the packet a document Bundle,
the consult a DocumentReference (with its document), the audit trail AuditEvents.

A caller registered with ``fhir_servers`` may only touch referrals of those EHRs, and create referrals only when
the service's EHR is one of them.
"""

from flask import current_app, g, request

from service.auth.scopes import covers
from service.errors import Forbidden

REQUIRED_SCOPES: dict[str, str] = {
    "referrals.create_referral": "system/ServiceRequest.c",
    "referrals.get_referral": "system/ServiceRequest.r",
    "referrals.get_history": "system/ServiceRequest.r",
    "referrals.get_packet": "system/Bundle.r",
    "referrals.send_referral": "system/ServiceRequest.u",
    "referrals.change_status": "system/Task.u",
    "referrals.retry_writeback": "system/Task.u",
    "referrals.receive_consult": "system/DocumentReference.c",
    "referrals.get_consult": "system/DocumentReference.r",
    "referrals.get_audit": "system/AuditEvent.r",
}
GRANT_KEY = "api_grant"


def require_api_token() -> None:
    """Check the bearer token of a request made without a launched session (401/403 as OperationOutcome)."""
    from service.auth import get_auth

    grant = get_auth().api_tokens.check(request.headers.get("Authorization"))
    needed = REQUIRED_SCOPES.get(request.endpoint or "")
    if needed is None:
        raise Forbidden("this route is not available to API clients")
    if not any(covers(scope, needed) for scope in grant.scopes):
        raise Forbidden(f"the access token's scopes do not include {needed}")
    if grant.client.fhir_servers:
        _check_ehr(grant.client)
    g.setdefault(GRANT_KEY, grant)


def api_client_id() -> str | None:
    """The client_id of this request's API caller (for "who did it"), or None."""
    grant = g.get(GRANT_KEY)
    return grant.client.client_id if grant is not None else None


def _check_ehr(client) -> None:  # noqa: ANN001 - an ApiClient
    from service.auth import default_ehr
    from service.store.repository import get_repository

    referral_id = (request.view_args or {}).get("referral_id")
    if referral_id is not None:
        ehr = get_repository().get(str(referral_id)).ehr_base_url  # 404 for an unknown referral
    else:
        ehr = default_ehr(current_app) or ""  # where a new referral's record is read
    if not client.allows_ehr(ehr):
        raise Forbidden("this API client may not act on that EHR's referrals")
