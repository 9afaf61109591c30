"""Every FHIR model comes from fhir.resources.R4B (EHRs speak R4; the package's top level is R5)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["service", "mappers", "fixtures", "tests", "bench", "wsgi.py"]


def _python_files() -> list[Path]:
    files: list[Path] = []
    for name in PACKAGES:
        path = ROOT / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def _r5_imports(source: str) -> list[str]:
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fhir.resources"):
            module = node.module
            if module == "fhir.resources":
                bad.extend(f"from fhir.resources import {a.name}" for a in node.names if a.name != "R4B")
            elif not module.startswith("fhir.resources.R4B"):
                bad.append(f"from {module} import ...")
        elif isinstance(node, ast.Import):
            bad.extend(f"import {a.name}" for a in node.names
                       if a.name.startswith("fhir.resources") and not a.name.startswith("fhir.resources.R4B"))
    return bad


def test_no_module_imports_fhir_models_from_the_r5_top_level() -> None:
    offenders = {str(p.relative_to(ROOT)): bad for p in _python_files() if (bad := _r5_imports(p.read_text("utf-8")))}
    assert offenders == {}


def test_the_import_check_catches_r5_imports() -> None:
    assert _r5_imports("from fhir.resources.condition import Condition") == ["from fhir.resources.condition import ..."]
    assert _r5_imports("from fhir.resources import construct_fhir_element")
    assert _r5_imports("import fhir.resources.bundle")
    assert _r5_imports("from fhir.resources.R4B.condition import Condition") == []
