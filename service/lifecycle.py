"""The referral state machine: every allowed transition in one table (Task.status vocabulary)."""

from mappers import systems
from service.errors import Conflict

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
