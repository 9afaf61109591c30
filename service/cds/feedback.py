"""Reading a feedback call (CDS Hooks 2.0 §Feedback): `{"feedback": [{card, outcome, ...}]}`.

Each entry: `card` (the card's uuid), `outcome` `accepted` or `overridden`, `acceptedSuggestions` (REQUIRED for
accepted: objects with the suggestion's `id`), optional `overrideReason` {`reason`: Coding, `userComment`},
`outcomeTimestamp` (ISO 8601, UTC).
"""

import json
from datetime import UTC, datetime

from service.cds.store import Feedback
from service.errors import InvalidRequest

OUTCOMES = ("accepted", "overridden")
MAX_ENTRIES = 100
MAX_COMMENT = 4000


def parse_feedback(data: bytes) -> list[Feedback]:
    """Check a feedback body; InvalidRequest names the first problem."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("the body must be a JSON object with a feedback array") from exc
    entries = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidRequest("the body must be a JSON object with a non-empty feedback array")
    if len(entries) > MAX_ENTRIES:
        raise InvalidRequest(f"at most {MAX_ENTRIES} feedback entries per call")
    return [_entry(entry, f"feedback[{i}]") for i, entry in enumerate(entries)]


def _entry(entry: object, where: str) -> Feedback:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{where} must be an object")
    card = entry.get("card")
    if not isinstance(card, str) or not card or len(card) > 256:
        raise InvalidRequest(f"{where}.card must be the card's uuid")
    outcome = entry.get("outcome")
    if outcome not in OUTCOMES:
        raise InvalidRequest(f"{where}.outcome must be accepted or overridden")
    accepted = entry.get("acceptedSuggestions", [])
    if (not isinstance(accepted, list)
            or not all(isinstance(s, dict) and isinstance(s.get("id"), str) and s["id"] for s in accepted)):
        raise InvalidRequest(f"{where}.acceptedSuggestions must be an array of {{\"id\": suggestion uuid}}")
    if outcome == "accepted" and not accepted:
        raise InvalidRequest(f"{where}.acceptedSuggestions is required when the outcome is accepted")
    return Feedback(card=card, outcome=outcome, accepted_suggestions=[s["id"] for s in accepted],
                    override_reason=_override_reason(entry.get("overrideReason"), where),
                    outcome_timestamp=_timestamp(entry.get("outcomeTimestamp"), where))


def _override_reason(value: object, where: str) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"reason", "userComment"}:
        raise InvalidRequest(f"{where}.overrideReason must be an object with reason and/or userComment")
    reason = value.get("reason")
    if reason is not None and (not isinstance(reason, dict) or not isinstance(reason.get("code"), str)
                               or not isinstance(reason.get("system"), str)):
        raise InvalidRequest(f"{where}.overrideReason.reason must be a Coding with code and system")
    comment = value.get("userComment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidRequest(f"{where}.overrideReason.userComment must be a string of up to {MAX_COMMENT} characters")
    out: dict = {}
    if reason is not None:
        out["reason"] = {k: reason[k] for k in ("system", "code", "display") if isinstance(reason.get(k), str)}
    if comment is not None:
        out["userComment"] = comment
    return out or None


def _timestamp(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.outcomeTimestamp is required (ISO 8601, UTC)")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(f"{where}.outcomeTimestamp must be an ISO 8601 timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
