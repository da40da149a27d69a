"""The one domain exception family the service layer raises; edges map it to HTTP / MCP / exit codes."""

from __future__ import annotations


class ApplicationError(Exception):
    """Something the caller must be told about. ``status`` is the HTTP status the edges use."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}

    def to_dict(self) -> dict:
        return {"error": self.code, "message": self.message, **self.extra}


class ValidationFailed(ApplicationError):
    status = 400
    code = "invalid_request"


class AuthenticationFailed(ApplicationError):
    status = 401
    code = "invalid_token"


class PermissionDenied(ApplicationError):
    status = 403
    code = "insufficient_scope"


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class Conflict(ApplicationError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApplicationError):
    status = 413
    code = "payload_too_large"


class RateLimited(ApplicationError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, extra: dict | None = None):
        super().__init__(message, extra={"retry_after": retry_after, **(extra or {})})
        self.retry_after = retry_after


class ServiceUnavailable(ApplicationError):
    status = 503
    code = "unavailable"
