"""What a second opinion concluded about the referred diagnoses: confirmed, revised, refuted, new, not addressed.

Each consult Condition C is compared with the referred Conditions R; the first rule that matches decides:

| rule | C relates to referred R by                                     | C.verificationStatus       | result          |
|------|---------------------------------------------------------------|----------------------------|-----------------|
| 1    | C.evidence.detail references R ("Condition/<R.id>" or a URL   | refuted / entered-in-error | refuted: R      |
|      | ending so): FHIR's "this diagnosis rests on that one"         | otherwise, a shared code   | confirmed: R    |
|      | (R4 Condition.evidence.detail)                                | otherwise, codes differ    | revised: R → C  |
| 2    | a coding with the same system and code                        | refuted / entered-in-error | refuted: R      |
|      |                                                               | otherwise                  | confirmed: R    |
| 3    | an ICD-10-CM/ICD-10 coding of C (its code, or the ICD-10      | not refuted / e-i-e        | revised: R → C  |
|      | translation of a SNOMED-coded C) in the same 3-character      |                            |                 |
|      | category as an ICD-10 coding of R, with a different code      |                            |                 |
| 4    | nothing                                                       | not refuted / e-i-e        | new: C          |
| -    | nothing                                                       | refuted / entered-in-error | not reported    |

A refuted consult Condition that matches no referred one is a ruled-out diagnosis nobody asked about: it is neither
new nor about the referral, so it is not reported. Referred Conditions no rule matched are not_addressed.
Codes compare after normalising systems (urn:oid:<oid> ≡ the FHIR URI); ICD-10(-CM) codes compare
case-insensitively without the dot.

Items: {"condition": "Condition/<id as sent>", "code": "<system>|<code>", "display": "..."} for referred
Conditions; revised items are {"from": <referred item>, "to": {"code", "display"}}; new items {"code", "display"}.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.condition import Condition

from mappers import systems
from mappers.oids import CODE_SYSTEMS

ICD10_SYSTEMS = frozenset({systems.ICD10CM, "http://hl7.org/fhir/sid/icd-10"})
_NEGATIVE = frozenset({"refuted", "entered-in-error"})


@dataclass(frozen=True)
class Concordance:
    """The consultant's conclusions, per referred Condition (and the new ones)."""

    confirmed: list[dict] = field(default_factory=list)
    revised: list[dict] = field(default_factory=list)
    refuted: list[dict] = field(default_factory=list)
    new: list[dict] = field(default_factory=list)
    not_addressed: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the five lists as a JSON-ready dict."""
        return {"confirmed": list(self.confirmed), "revised": list(self.revised), "refuted": list(self.refuted),
                "new": list(self.new), "not_addressed": list(self.not_addressed)}


def assess_concordance(referred: list[Condition], consult_conditions: list[Condition]) -> Concordance:
    """Compare the consult's Conditions with the referred ones (rules in the module docstring)."""
    result = Concordance()
    matched: set[int] = set()
    for consult in consult_conditions:
        negative = verification(consult) in _NEGATIVE
        hits = _linked(consult, referred) or _same_code(consult, referred) or (
            [] if negative else _same_category(consult, referred))
        if not hits:
            if not negative:
                _add(result.new, _described(consult, _first_coding(consult)))
            continue
        for index, rule, referred_coding, consult_coding in hits:
            matched.add(index)
            _record(result, referred[index], consult, rule, referred_coding, consult_coding, negative)
    for index, condition in enumerate(referred):
        if index not in matched:
            _add(result.not_addressed, _item(condition, _first_coding(condition)))
    return result


Hit = tuple[int, str, Coding | None, Coding | None]


def _record(result: Concordance, referred: Condition, consult: Condition, rule: str,
            referred_coding: Coding | None, consult_coding: Coding | None, negative: bool) -> None:
    """File one match under refuted, confirmed or revised."""
    item = _item(referred, referred_coding or _first_coding(referred))
    if negative:
        _add(result.refuted, item)
    elif rule == "code" or (rule == "link" and _shared_coding(referred, consult) is not None):
        _add(result.confirmed, item)
    else:
        _add(result.revised, {"from": item, "to": _described(consult, consult_coding or _first_coding(consult))})


def _linked(consult: Condition, referred: list[Condition]) -> list[Hit]:
    """Rule 1: referred Conditions that C.evidence.detail points at."""
    targets = {ref.reference.strip() for evidence in consult.evidence or [] for ref in evidence.detail or []
               if ref.reference}
    hits = []
    for index, condition in enumerate(referred):
        if condition.id and any(t == f"Condition/{condition.id}" or t.endswith(f"/Condition/{condition.id}")
                                for t in targets):
            shared = _shared_coding(condition, consult)
            hits.append((index, "link", shared[0] if shared else None, shared[1] if shared else None))
    return hits


def _same_code(consult: Condition, referred: list[Condition]) -> list[Hit]:
    """Rule 2: referred Conditions with a coding of the same system and code."""
    hits = []
    for index, condition in enumerate(referred):
        shared = _shared_coding(condition, consult)
        if shared is not None:
            hits.append((index, "code", shared[0], shared[1]))
    return hits


def _same_category(consult: Condition, referred: list[Condition]) -> list[Hit]:
    """Rule 3: referred Conditions with an ICD-10 coding in the same 3-character category (different code)."""
    hits = []
    for index, condition in enumerate(referred):
        pair = next(((r, c) for r in _icd10(condition) for c in _icd10(consult)
                     if icd10_key(r.code)[:3] == icd10_key(c.code)[:3] and icd10_key(r.code) != icd10_key(c.code)),
                    None)
        if pair is not None:
            hits.append((index, "category", pair[0], pair[1]))
    return hits


def _shared_coding(a: Condition, b: Condition) -> tuple[Coding, Coding] | None:
    """Return the first pair of codings (a's, b's) with the same normalised system and code."""
    b_keys = {coding_key(c): c for c in _codings(b) if coding_key(c)}
    for coding in _codings(a):
        key = coding_key(coding)
        if key and key in b_keys:
            return coding, b_keys[key]
    return None


def coding_key(coding: Coding) -> tuple[str, str] | None:
    """Return (normalised system, normalised code), or None for a coding without both."""
    if not coding.system or not coding.code:
        return None
    system = normalise_system(coding.system)
    code = icd10_key(coding.code) if system in ICD10_SYSTEMS else coding.code.strip()
    return system, code


def normalise_system(system: str) -> str:
    """Return the FHIR URI for urn:oid:<known oid>, else the system without a trailing slash."""
    system = system.strip()
    if system.startswith("urn:oid:"):
        return CODE_SYSTEMS.get(system[len("urn:oid:"):], system)
    return system.rstrip("/")


def icd10_key(code: str | None) -> str:
    """Return an ICD-10 code upper-cased, without dots or spaces."""
    return (code or "").replace(".", "").replace(" ", "").upper()


def verification(condition: Condition) -> str | None:
    """Return the condition-ver-status code of a Condition, if any."""
    status = condition.verificationStatus
    return next((c.code for c in (status.coding or []) if c.code), None) if status else None


def _codings(condition: Condition) -> list[Coding]:
    """Return the codings of Condition.code."""
    return list(condition.code.coding or []) if condition.code else []


def _icd10(condition: Condition) -> list[Coding]:
    """Return the ICD-10(-CM) codings of a Condition with at least a 3-character code."""
    return [c for c in _codings(condition)
            if c.system and normalise_system(c.system) in ICD10_SYSTEMS and len(icd10_key(c.code)) >= 3]


def _first_coding(condition: Condition) -> Coding | None:
    """Return the first coding with a code, if any."""
    return next((c for c in _codings(condition) if c.code), None)


def _item(condition: Condition, coding: Coding | None) -> dict:
    """Describe a referred Condition."""
    return {"condition": f"Condition/{condition.id}" if condition.id else None, **_described(condition, coding)}


def _described(condition: Condition, coding: Coding | None) -> dict:
    """Return {"code": "system|code", "display": ...} for a Condition and the coding that matters."""
    code = f"{coding.system or ''}|{coding.code}" if coding is not None else None
    display = (coding.display if coding is not None else None) or (condition.code.text if condition.code else None)
    return {"code": code, "display": display}


def _add(items: list[dict], item: dict) -> None:
    """Append an item unless an equal one is already there."""
    if item not in items:
        items.append(item)


def conditions_of(resources: Iterable[object]) -> list[Condition]:
    """Return the Conditions among resources (e.g. the entries of a consult Bundle)."""
    return [r for r in resources if isinstance(r, Condition)]
