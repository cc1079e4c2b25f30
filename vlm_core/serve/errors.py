"""One error type for every 4xx/5xx the server answers; each API renders it in its own shape."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.retry_after = status, message, param, code, retry_after

    @property
    def type(self) -> str:
        """OpenAI's error type for this status."""
        return {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                413: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error")


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param, "invalid_value" if param else None)
