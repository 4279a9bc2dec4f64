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
"""

from sidegate._naming import check_internal_packages

check_internal_packages()

from sidegate.default import (  # noqa: E402
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
from sidegate.errors import (  # noqa: E402
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
from sidegate.gateway import Gateway, SpecError  # noqa: E402
from sidegate.messages import assistant_message, system_message, tool_message, user_message  # noqa: E402
from sidegate.wire import Result  # noqa: E402

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
