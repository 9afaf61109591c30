"""The scopes we ask for: only what the service uses, in SMART v2 syntax when the server offers it, else v1."""

# What the fetch reads (patient compartment, then what it references) and what send and write-back write.
PATIENT_READ_TYPES = ("Patient", "Condition", "Procedure", "DiagnosticReport", "Observation", "MedicationStatement",
                      "MedicationRequest", "AllergyIntolerance", "CarePlan", "DocumentReference", "Encounter", "Specimen")
# Not patient data (what the fetch resolves from references): user/ scopes.
SHARED_READ_TYPES = ("Medication", "Practitioner", "PractitionerRole", "Organization", "Location")
WRITE_TYPES = ("DocumentReference", "Bundle", "ServiceRequest")  # conditional creates
# PUT: the Task (created when a referral is sent, completed by the write-back) and the Provenance (an id we choose,
# so a repeated write-back replaces it: update-as-create needs both c and u).
UPDATE_TYPES = ("Task", "Provenance")

V1 = {"rs": "read", "c": "write", "cu": "write"}


def launch_scopes(*, v2: bool, standalone: bool, access: str = "offline") -> str:
    """Scopes for an EHR launch (``launch``) or a standalone launch (``launch/patient``)."""
    scopes = ["launch/patient" if standalone else "launch", "openid", "fhirUser",
              "offline_access" if access == "offline" else "online_access"]
    scopes += [_scope("patient", t, "rs", v2) for t in PATIENT_READ_TYPES]
    scopes += [_scope("user", t, "rs", v2) for t in SHARED_READ_TYPES]
    scopes += [_scope("user", t, "c", v2) for t in WRITE_TYPES]
    scopes += [_scope("user", t, "cu", v2) for t in UPDATE_TYPES]
    return " ".join(dict.fromkeys(scopes))


def backend_scopes(*, v2: bool) -> str:
    """System scopes for backend services: the same reads and writes, for any patient the EHR allows us."""
    scopes = [_scope("system", t, "rs", v2) for t in (*PATIENT_READ_TYPES, *SHARED_READ_TYPES)]
    scopes += [_scope("system", t, "c", v2) for t in WRITE_TYPES]
    scopes += [_scope("system", t, "cu", v2) for t in UPDATE_TYPES]
    return " ".join(dict.fromkeys(scopes))


def _scope(context: str, resource_type: str, permissions: str, v2: bool) -> str:
    return f"{context}/{resource_type}.{permissions if v2 else V1[permissions]}"


# -- scopes we grant to API callers (service/auth/api_tokens.py) -------------------------------------------
# SMART App Launch 2.x §Scopes for requesting FHIR Resources: `<context>/<resourceType | *>.<permissions>`,
# permissions an ordered subset of "cruds" (v2), or v1's `read` (= rs), `write` (= cud) and `*` (= cruds).
V2_PERMISSIONS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}


def parse_scope(scope: str) -> tuple[str, str, str] | None:
    """``system/Task.cu`` → ("system", "Task", "cu"); None when it is not a resource scope we understand."""
    context, slash, rest = scope.partition("/")
    resource, dot, permissions = rest.partition(".")
    if not slash or not dot or context not in ("system", "user", "patient") or not resource:
        return None
    if not (resource == "*" or (resource.isalpha() and resource[0].isupper())):
        return None
    permissions = permissions.split("?")[0]  # v2 search-parameter restrictions are not granted here
    permissions = V1_PERMISSIONS.get(permissions, permissions)
    if not permissions or any(p not in V2_PERMISSIONS for p in permissions) or len(set(permissions)) != len(permissions):
        return None
    return context, resource, permissions


def covers(granted: str, needed: str) -> bool:
    """Does the granted scope allow everything the needed scope asks (same context, type or *, permissions ⊇)?"""
    g, n = parse_scope(granted), parse_scope(needed)
    if g is None or n is None or "?" in granted:
        return False
    return g[0] == n[0] and g[1] in ("*", n[1]) and set(n[2]) <= set(g[2])
