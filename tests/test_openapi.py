"""The OpenAPI description stays true: it matches the app's URL map both ways, and README's REST API table."""

import re
from pathlib import Path

from flask import Flask

from service.api.openapi import OPERATIONS, expand_rule, openapi_path

ROOT = Path(__file__).resolve().parent.parent
IGNORED_METHODS = {"HEAD", "OPTIONS"}
README_ROW = re.compile(r"^\|\s*`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`\s*\|")


def served_operations(app: Flask) -> dict[tuple[str, str], str]:
    """(METHOD, OpenAPI path) → Flask rule (any(...) written out), for every route served (static files aside)."""
    served = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            for concrete in expand_rule(rule.rule):
                served[(method, openapi_path(concrete))] = concrete
    return served


def described_operations(spec: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def shape(path: str) -> str:
    """A path with its parameters' names dropped: '/api/referrals/{referral_id}' and '/api/referrals/<id>' match."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path)


def readme_operations() -> set[tuple[str, str]]:
    """The `METHOD /path` rows of README.md's "## REST API" section."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("\n## REST API", 1)[1].split("\n## ", 1)[0]
    return {(m.group(1), shape(m.group(2))) for line in section.splitlines() if (m := README_ROW.match(line))}


def test_openapi_json_is_served_as_an_openapi_3_document(app: Flask) -> None:
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["servers"] == [{"url": "http://localhost"}]
    operation_ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["responses"], f"{method.upper()} {path}"
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), f"{method.upper()} {path} path parameters"
            for response in op["responses"].values():  # every $ref resolves
                ref = response.get("$ref")
                assert ref is None or ref.split("/")[-1] in spec["components"]["responses"]


def test_every_route_is_described_and_nothing_else(app: Flask) -> None:
    served = served_operations(app)
    described = described_operations(app.test_client().get("/openapi.json").get_json())
    missing = sorted(set(served) - described)
    stale = sorted(described - set(served))
    assert not missing, ("served but not described in service/api/openapi.py OPERATIONS — add an entry keyed "
                         "(method, rule) for: " + ", ".join(f"({m!r}, {served[(m, p)]!r})" for m, p in missing))
    assert not stale, ("described in service/api/openapi.py OPERATIONS but not served — remove or fix: "
                       + ", ".join(f"{m} {p}" for m, p in stale))


def test_operations_are_keyed_by_the_rules_as_declared(app: Flask) -> None:
    rules = {(m, rule) for (m, _), rule in served_operations(app).items()}
    unknown = sorted(key for key in OPERATIONS if key not in rules)
    assert not unknown, f"OPERATIONS keys that are not (method, Flask rule) of a route: {unknown}"


def test_readme_rest_api_table_matches_the_spec(app: Flask) -> None:
    described = {(m, shape(p)) for m, p in described_operations(app.test_client().get("/openapi.json").get_json())}
    in_readme = readme_operations()
    assert in_readme, "README.md has no `METHOD /path` rows under '## REST API'"
    missing = sorted(described - in_readme)
    extra = sorted(in_readme - described)
    assert not missing, ("README.md '## REST API' lacks rows for: " + ", ".join(f"{m} {p}" for m, p in missing)
                         + " (python -m service.api.openapi --readme prints the table)")
    assert not extra, "README.md '## REST API' lists routes the API does not have: " + ", ".join(
        f"{m} {p}" for m, p in extra)
