"""Typed exceptions for the library, mirroring the HTTP error table (docs/http.md#errors).

Each library call goes through the same ASGI app as the sidecar; an error answer (OpenAI's or
Anthropic's envelope, or a stream's final error event) is raised as the class its status and code
name. Every class keeps the answer's `status`, `type`, `code`, `param`, `retry_after` and
`message`; messages are the gateway's own, which never hold a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "InternalServerError",
    "ModelNotFound",
    "NotFoundError",
    "Overloaded",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLarge",
    "ServiceUnavailable",
    "SidegateError",
    "Timeout",
    "UpstreamError",
    "error_from",
]


class SidegateError(Exception):
    """An error answer of the gateway."""

    def __init__(self, message: str, *, status: int, type: str | None = None, code: str | None = None,
                 param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class BadRequestError(SidegateError):
    """400: an invalid request, or one the upstream refused (upstream 4xx keep their status)."""


class ContextWindowExceeded(BadRequestError):
    """400 `context_length_exceeded`: the prompt does not fit any target's context window."""


class ContentPolicyViolation(BadRequestError):
    """400 `content_policy_violation`: the provider's content filter refused."""


class AuthenticationError(SidegateError):
    """401: no key, or an unknown, revoked or expired one."""


class PermissionDeniedError(SidegateError):
    """403: a model the key or its team may not use (or `price_unknown`, a fail-closed budget)."""


class NotFoundError(SidegateError):
    """404: no such route."""


class ModelNotFound(NotFoundError):
    """404 `model_not_found`: the model is not in the plan."""


class RequestTooLarge(SidegateError):
    """413 `request_too_large`: the body is over `server.max_body`."""


class RateLimitError(SidegateError):
    """429: a key's, team's or user's limit, or the upstream's 429 with no other deployment free."""


class BudgetExceeded(RateLimitError):
    """429 `budget_exceeded`: a key's or team's budget is spent."""


class InternalServerError(SidegateError):
    """500: an error inside sidegate."""


class UpstreamError(SidegateError):
    """502: the upstream failed, was unreachable, refused the credentials, or broke its answer."""


class ServiceUnavailable(SidegateError):
    """503: no deployment could take the request (breakers open, the shutdown drain)."""


class Overloaded(ServiceUnavailable):
    """503 `overloaded_error` (Anthropic's 529)."""


class Timeout(SidegateError):
    """504 `gateway_timeout`: the request's deadline passed."""


_BY_CODE: dict[str, type[SidegateError]] = {
    "budget_exceeded": BudgetExceeded,
    "context_length_exceeded": ContextWindowExceeded,
    "content_policy_violation": ContentPolicyViolation,
    "model_not_found": ModelNotFound,
    "request_too_large": RequestTooLarge,
    "upstream_overloaded": Overloaded,
}
_BY_TYPE: dict[str, type[SidegateError]] = {"overloaded_error": Overloaded, "rate_limit_error": RateLimitError}
_BY_STATUS: dict[int, type[SidegateError]] = {
    401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError, 413: RequestTooLarge,
    429: RateLimitError, 500: InternalServerError, 502: UpstreamError, 503: ServiceUnavailable, 504: Timeout,
    529: Overloaded,
}


def error_from(status: int, body: Any, retry_after: float | None = None) -> SidegateError:
    """The typed exception for an error answer: by code, then type, then status (any other 4xx is a
    `BadRequestError`, any other 5xx an `UpstreamError`). `body` is the decoded JSON answer or a
    stream's error event, in OpenAI's or Anthropic's envelope."""
    err: Mapping[str, Any] = {}
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
    message = str(err.get("message") or f"the gateway answered {status}")
    code = err.get("code") if isinstance(err.get("code"), str) else None
    kind = err.get("type") if isinstance(err.get("type"), str) else None
    param = err.get("param") if isinstance(err.get("param"), str) else None
    cls = (_BY_CODE.get(code or "") or _BY_TYPE.get(kind or "") or _BY_STATUS.get(status)
           or (BadRequestError if status < 500 else UpstreamError))
    return cls(message, status=status, type=kind, code=code, param=param, retry_after=retry_after)
