"""The referral state machine: every allowed transition in one table (Task.status vocabulary)."""

from dataclasses import dataclass

from mappers import systems
from service.errors import Conflict, InvalidRequest

# DESIGN.md "The loop": draft → requested → accepted|rejected → in-progress → completed|failed;
# cancelled from any open state. A consult may arrive while requested (the consultant's answer is
# their acceptance), and a failed write-back can be resumed (failed → in-progress).
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", "cancelled"}),
    "requested": frozenset({"accepted", "rejected", "in-progress", "cancelled"}),
    "accepted": frozenset({"in-progress", "cancelled"}),
    "in-progress": frozenset({"completed", "failed", "cancelled"}),
    "failed": frozenset({"in-progress", "cancelled"}),
    "rejected": frozenset(),
    "completed": frozenset(),
    "cancelled": frozenset(),
}

OPEN_STATES = frozenset(s for s, targets in TRANSITIONS.items() if targets)

# BSeR Task businessStatus for each Task.status (HL7/bser TaskBusinessStatusCS), kept with the other codes.
BUSINESS_STATUS: dict[str, tuple[str, str]] = systems.BSER_BUSINESS_STATUS_FOR_TASK_STATUS


def check_transition(current: str, target: str) -> None:
    """Raise Conflict unless the referral may move from current to target."""
    if target not in TRANSITIONS.get(current, frozenset()):
        raise Conflict(f"a referral that is {current} cannot become {target}")


# The status changes people make through the API (POST /api/referrals/<id>/<action>), each one move of the table
# above. Write-back moves (in-progress on a consult, completed, failed) are made by the service itself.
@dataclass(frozen=True)
class Action:
    """One API action: the status it moves a referral to, and whether the caller must say why."""

    target: str
    reason_required: bool
    default_reason: str


ACTIONS: dict[str, Action] = {
    "accept": Action("accepted", False, "accepted by the consultant"),
    "reject": Action("rejected", True, ""),
    "start": Action("in-progress", False, "the consultant started work"),
    "cancel": Action("cancelled", True, ""),
}
MAX_REASON_CHARS = 2000


def action_reason(action: str, body: object) -> str:
    """The reason an action's body gives ({"reason": "..."}; required for reject and cancel); InvalidRequest else."""
    spec = ACTIONS[action]
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(body) - {"reason"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    reason = body.get("reason")
    if reason is None and not spec.reason_required:
        return spec.default_reason
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest(f"'reason' (why the referral is {spec.target}) is required")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"'reason' is longer than {MAX_REASON_CHARS} characters")
    return reason.strip()
