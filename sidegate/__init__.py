"""sidegate as a Python library: the sidecar's runtime in-process.

`Gateway.from_spec(path_or_text)` (or `Gateway.from_plan(...)`) hosts the same ASGI app
`sidegate serve` runs, without a listener, in a runtime thread it owns; `completion()`,
`acompletion()`, `embedding()`, `responses()`, `messages()` and their `a...` twins are requests to
it, so routing, retries, fallbacks, limits, budgets and spend rows are the sidecar's own. The
module-level functions use a default gateway (`SIDEGATE_SPEC`, or `model="provider/model"` for a
one-off call). Errors are typed (`RateLimitError`, `BudgetExceeded`, `ContextWindowExceeded`...).

Layout: `gateway` (the class), `default` (module-level calls), `calls` (the three hosting modes),
`host` (the runtime thread), `exchange` (one in-process ASGI exchange), `wire` (answers, events),
`errors`, `messages` (helpers).
May import: `runtime.server`, `runtime.http.app`, `runtime.asgi`, `runtime.plan`, and (to compile a
spec, lazily) `compiler.pipeline`, `compiler.report`, `compiler.data`.

sidegate's internal packages live inside this one: `sidegate.runtime` and `sidegate.compiler` (the
repository's top-level `runtime/` and `compiler/` folders, linked here), so the wheel installs the
single top-level name `sidegate` (docs/library.md#package-names). The public names below load on
first use, so `import sidegate.runtime...` (the sidecar, the CLI) never pays for the library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidegate.default import (
        acompletion,
        aembedding,
        amessages,
        aresponses,
        close_defaults,
        completion,
        embedding,
        messages,
        responses,
    )
    from sidegate.errors import (
        AuthenticationError,
        BadRequestError,
        BudgetExceeded,
        ContentPolicyViolation,
        ContextWindowExceeded,
        InternalServerError,
        ModelNotFound,
        NotFoundError,
        Overloaded,
        PermissionDeniedError,
        RateLimitError,
        RequestTooLarge,
        ServiceUnavailable,
        SidegateError,
        Timeout,
        UpstreamError,
    )
    from sidegate.gateway import Gateway, SpecError
    from sidegate.messages import assistant_message, system_message, tool_message, user_message
    from sidegate.wire import Result

_LAZY: dict[str, str] = {
    "AuthenticationError": "sidegate.errors",
    "BadRequestError": "sidegate.errors",
    "BudgetExceeded": "sidegate.errors",
    "ContentPolicyViolation": "sidegate.errors",
    "ContextWindowExceeded": "sidegate.errors",
    "Gateway": "sidegate.gateway",
    "InternalServerError": "sidegate.errors",
    "ModelNotFound": "sidegate.errors",
    "NotFoundError": "sidegate.errors",
    "Overloaded": "sidegate.errors",
    "PermissionDeniedError": "sidegate.errors",
    "RateLimitError": "sidegate.errors",
    "RequestTooLarge": "sidegate.errors",
    "Result": "sidegate.wire",
    "ServiceUnavailable": "sidegate.errors",
    "SidegateError": "sidegate.errors",
    "SpecError": "sidegate.gateway",
    "Timeout": "sidegate.errors",
    "UpstreamError": "sidegate.errors",
    "acompletion": "sidegate.default",
    "aembedding": "sidegate.default",
    "amessages": "sidegate.default",
    "aresponses": "sidegate.default",
    "assistant_message": "sidegate.messages",
    "close_defaults": "sidegate.default",
    "completion": "sidegate.default",
    "embedding": "sidegate.default",
    "messages": "sidegate.default",
    "responses": "sidegate.default",
    "system_message": "sidegate.messages",
    "tool_message": "sidegate.messages",
    "user_message": "sidegate.messages",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sidegate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceeded",
    "ContentPolicyViolation",
    "ContextWindowExceeded",
    "Gateway",
    "InternalServerError",
    "ModelNotFound",
    "NotFoundError",
    "Overloaded",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLarge",
    "Result",
    "ServiceUnavailable",
    "SidegateError",
    "SpecError",
    "Timeout",
    "UpstreamError",
    "acompletion",
    "aembedding",
    "amessages",
    "aresponses",
    "assistant_message",
    "close_defaults",
    "completion",
    "embedding",
    "messages",
    "responses",
    "system_message",
    "tool_message",
    "user_message",
]
