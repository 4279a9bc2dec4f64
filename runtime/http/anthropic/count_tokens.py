"""`POST /v1/messages/count_tokens`: Anthropic's own count when the model's group has an Anthropic
deployment (its tokenizer is Claude's), else a local count with the shipped encoding.

The upstream count is one call to the first Anthropic deployment whose breaker is not open,
`{base}/messages/count_tokens` with the request's counted fields; any failure (an error status, a
timeout, an unreadable answer) falls back to the local count, so the endpoint answers either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import trio

from sidegate.runtime.http.anthropic.messages import estimate_input_tokens
from sidegate.runtime.plan import Family
from sidegate.runtime.routing.breaker import Circuit
from sidegate.runtime.routing.routes import Route
from sidegate.runtime.routing.state import Runtime
from sidegate.runtime.upstream.providers.anthropic import client_versioned
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["COUNTED", "count_input_tokens"]

COUNTED = frozenset({"messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"})
"""The Messages fields Anthropic's count_tokens takes (besides `model`)."""
_DEADLINE = 10.0


async def count_input_tokens(rt: Runtime, route: Route, data: dict[str, Any],
                             client: Mapping[str, str]) -> tuple[int, str]:
    """The request's input tokens and where the count came from (`anthropic` or `local`)."""
    counted = await _upstream(rt, route, data, client)
    if counted is not None:
        return counted, "anthropic"
    return estimate_input_tokens(data), "local"


async def _upstream(rt: Runtime, route: Route, data: dict[str, Any], client: Mapping[str, str]) -> int | None:
    deps = rt.deployments.get(route.group.name, ())
    dep = next((d for d in deps if d.provider.family is Family.ANTHROPIC
                and (d.target.model != "*" or route.suffix)
                and d.state.breaker.circuit is not Circuit.OPEN), None)
    if dep is None:
        return None
    model = route.suffix if dep.target.model == "*" and route.suffix else dep.target.model
    body = {k: v for k, v in data.items() if k in COUNTED}
    body["model"] = model
    headers = client_versioned(dep.headers, client)
    url = dep.url("chat", model) + "/count_tokens"
    request = UpstreamRequest("POST", url, headers, orjson.dumps(body), dep.provider.connect_timeout)
    with trio.move_on_after(_DEADLINE):
        try:
            if dep.authorizer is not None:
                request = await dep.authorizer.authorize(request)
            response = await dep.transport.send(request)
            answer = orjson.loads(response.body) if response.status == 200 else None
        except Exception:  # any failure: the local count answers instead
            return None
        counted = answer.get("input_tokens") if isinstance(answer, dict) else None
        if isinstance(counted, int) and not isinstance(counted, bool) and counted >= 0:
            return counted
    return None
