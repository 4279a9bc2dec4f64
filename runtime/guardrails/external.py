"""External guardrails: a generic HTTP check and an OpenAI-compatible moderation endpoint.

Both are one POST through the upstream transport seam (`Post`, built by the HTTP layer over the
shared upstream transport: the same keep-alive pool, connect timeout and answer limit as model
calls), bounded by the guardrail's `timeout`. A failure (timeout, connection error, an error status,
an answer outside the contract) lets the call go on with `fail: open`, or is a 503
`guardrail_unavailable` with `fail: closed`. The text is sent to the check and never logged.

The http contract: sidegate POSTs `{"guardrail", "mode", "texts": [...], "request": {"id", "op",
"model", "group", "key", "team"}}`; the check answers 200 with `{"action": "allow"}`,
`{"action": "block", "reason": "..."}` or `{"action": "mask", "texts": [...]}` (as many texts as it
was sent, in order).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from sidegate.runtime.errors import GatewayError, Unavailable
from sidegate.runtime.plan.guardrails import GuardAction, GuardKind, Guardrail

__all__ = ["Endpoint", "External", "Outcome", "Post", "unavailable"]

Post = Callable[[str, tuple[tuple[str, str], ...], bytes, float, int], Awaitable[tuple[int, bytes]]]
"""(url, headers, JSON body, connect timeout, most answer bytes) -> (status, answer body)."""
Outcome = tuple[str, dict[str, object], list[str] | None]
"""(outcome, fields to log, the masked texts of a `mask` answer)."""
_REASON = 200
"""Characters of an http check's `reason` kept in the log line."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a check POSTs and with which headers (a moderation provider's credentials)."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()


def unavailable(name: str, why: str) -> Unavailable:
    return Unavailable(f"guardrail '{name}' could not check the text ({why}) and fails closed: try again later",
                       code="guardrail_unavailable")


class _Failed(Exception):
    """The check did not answer within its contract (the reason is logged, never the text)."""


class External:
    """One http or moderation guardrail, bound to its endpoint and the transport seam."""

    def __init__(self, rule: Guardrail, endpoint: Endpoint, post: Post) -> None:
        self.rule = rule
        self.endpoint = endpoint
        self.post = post

    async def check(self, texts: list[str], mode: str, context: dict[str, Any]) -> Outcome:
        """The decision on `texts`; raises `Unavailable` when the check fails and fails closed."""
        try:
            with trio.move_on_after(self.rule.timeout) as scope:
                outcome = await self._ask(texts, mode, context)
            if scope.cancelled_caught:
                raise _Failed(f"no answer within {self.rule.timeout:g}s")
        except (_Failed, GatewayError, OSError, trio.BrokenResourceError) as exc:
            why = str(exc) if isinstance(exc, _Failed) else type(exc).__name__
            if self.rule.fail_open:
                return "failed_open", {"error": why}, None
            raise unavailable(self.rule.name, why) from None
        return outcome

    async def _ask(self, texts: list[str], mode: str, context: dict[str, Any]) -> Outcome:
        if self.rule.kind is GuardKind.MODERATION:
            payload: dict[str, Any] = {"input": texts}
            if self.rule.model is not None:
                payload["model"] = self.rule.model
        else:
            payload = {"guardrail": self.rule.name, "mode": mode, "texts": texts, "request": context}
        body = orjson.dumps(payload)
        status, answer = await self.post(self.endpoint.url, self.endpoint.headers, body, self.rule.timeout,
                                         64 * 1024 + 4 * len(body))
        if status != 200:
            raise _Failed(f"it answered status {status}")
        try:
            reply = orjson.loads(answer)
        except orjson.JSONDecodeError:
            raise _Failed("its answer is not JSON") from None
        if self.rule.kind is GuardKind.MODERATION:
            return self._moderation(reply, len(texts))
        return self._verdict(reply, texts)

    def _found(self, fields: dict[str, object]) -> Outcome:
        return ("logged" if self.rule.action is GuardAction.LOG else "blocked"), fields, None

    def _moderation(self, reply: Any, count: int) -> Outcome:
        results = reply.get("results") if isinstance(reply, dict) else None
        if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
            raise _Failed("its answer has no `results` for each text")
        flagged = [r for r in results if r.get("flagged") is True]
        if not flagged:
            return "passed", {}, None
        categories = sorted({str(k)[:64] for r in flagged for k, v in (r.get("categories") or {}).items() if v is True})
        return self._found({"detail": "flagged", "categories": categories[:20]})

    def _verdict(self, reply: Any, texts: list[str]) -> Outcome:
        count = len(texts)
        action = reply.get("action") if isinstance(reply, dict) else None
        if action == "allow":
            return "passed", {}, None
        if action == "block":
            reason = reply.get("reason")
            said = {"reason": reason[:_REASON]} if isinstance(reason, str) else {}
            return self._found({"detail": "blocked", **said})
        if action == "mask":
            masked = reply.get("texts")
            if not isinstance(masked, list) or len(masked) != count or not all(isinstance(t, str) for t in masked):
                raise _Failed(f"its mask answer does not hold {count} texts")
            if self.rule.action is GuardAction.LOG:
                return "logged", {"detail": "mask"}, None
            return "masked", {"findings": sum(a != b for a, b in zip(masked, texts, strict=True))}, masked
        raise _Failed("its answer is not allow, block or mask")
