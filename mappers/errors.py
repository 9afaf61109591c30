"""Errors raised by mappers; the service reports them as 422 OperationOutcomes."""


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
