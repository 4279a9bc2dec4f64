"""The runtime's small exception hierarchy and its translation into OpenAI's error envelope.

Everything that can go wrong in a request is raised as a :class:`GatewayError` (or mapped to one at
the single boundary in :func:`from_exception`), then rendered in the client's dialect.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from sidegate.runtime.retry_after import retry_after_header

__all__ = [
    "BadRequest",
    "GatewayError",
    "GuardrailBlocked",
    "ModelNotFound",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "Unavailable",
    "UpstreamError",
    "UpstreamTimeout",
    "describe",
    "from_exception",
    "openai_body",
]


class GatewayError(Exception):
    """An error with an HTTP status and an OpenAI-style type and code."""

    status = 500
    type = "api_error"
    code: str | None = None
    anthropic_status: int | None = None
    """The status Anthropic clients get when it differs from `status` (529 for overloaded)."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.retry_after = retry_after
        self.upstream_status: int | None = None
        """The upstream's own HTTP status, when an upstream answer caused this error."""
        self.upstream_headers: list[tuple[bytes, bytes]] = []
        """Headers of that answer relayed to the client (rate-limit state, upstream request id)."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers: the relayed upstream ones, and Retry-After when known."""
        if self.retry_after is None:
            return list(self.upstream_headers)
        return [*self.upstream_headers, (b"retry-after", retry_after_header(self.retry_after))]


class BadRequest(GatewayError):
    """Invalid JSON, missing or ill-typed fields."""

    status = 400
    type = "invalid_request_error"


class GuardrailBlocked(BadRequest):
    """A guardrail refused the request or its answer (its name is said, never what it matched)."""

    code = "guardrail_blocked"

    def __init__(self, guardrail: str, mode: str) -> None:
        what = "request" if mode == "pre_call" else "answer"
        super().__init__(f"the {what} was blocked by guardrail '{guardrail}' ({mode})")
        self.guardrail = guardrail


class NotFound(GatewayError):
    """No such route."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(GatewayError):
    """The requested model is not in the plan."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    """The body is over `server.max_body`."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """The upstream (or a cap) refused for rate; carries Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The upstream failed (5xx, a broken connection, an unreadable answer)."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class Overloaded(UpstreamError):
    """The upstream says it is overloaded (Anthropic's 529): 503 for OpenAI clients, 529
    `overloaded_error` for Anthropic clients."""

    status = 503
    type = "overloaded_error"
    code = "upstream_overloaded"
    anthropic_status = 529


class UpstreamTimeout(GatewayError):
    """The request's deadline passed while waiting on the upstream."""

    status = 504
    type = "timeout_error"
    code = "gateway_timeout"


class Unavailable(GatewayError):
    """No deployment can take the request right now."""

    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


def describe(exc: BaseException) -> str:
    """An exception and its causes (the OS error under a broken stream), for error messages and logs:
    `BrokenResourceError <- ConnectionResetError: [Errno 104] Connection reset by peer`."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 3:
        if isinstance(seen, BaseExceptionGroup):
            seen = seen.exceptions[0]  # trio's "all attempts to connect failed": the first OS error
            continue
        text = str(seen)
        parts.append(f"{type(seen).__name__}: {text}" if text else type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def from_exception(exc: BaseException) -> GatewayError:
    """Map any exception to a GatewayError; unknown ones become a 500 that hides internals."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = exc.exceptions
        for leaf in leaves:
            if isinstance(leaf, GatewayError | BaseExceptionGroup):
                return from_exception(leaf)
    return GatewayError("internal error in sidegate", code="internal_error")


def openai_body(err: GatewayError) -> bytes:
    """OpenAI's error envelope: `{"error": {"message", "type", "param", "code"}}`."""
    payload: Mapping[str, object] = {
        "error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code,
                  **({"guardrail": err.guardrail} if isinstance(err, GuardrailBlocked) else {})}
    }
    return orjson.dumps(payload)
