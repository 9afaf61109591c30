"""Errors raised by mappers; the service reports them as 422 OperationOutcomes."""

from pydantic import ValidationError


class MappingError(Exception):
    """Input could not be mapped; the message says what is wrong (never patient data)."""

    status = 422
    issue_code = "processing"

    def __init__(self, diagnostics: str, *, status: int | None = None, issue_code: str | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if status is not None:
            self.status = status
        if issue_code is not None:
            self.issue_code = issue_code


def describe_validation_error(exc: ValidationError) -> str:
    """The first few problems of a pydantic ValidationError as 'path: message' (no input values)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more
