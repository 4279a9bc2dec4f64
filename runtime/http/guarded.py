"""The guardrails' hold on a model call's answer: post_call on a whole answer, during_call on a
stream, each speaking the client's dialect (Anthropic's error shapes for `/v1/messages`)."""

from __future__ import annotations

from sidegate.runtime.asgi import Send
from sidegate.runtime.errors import UpstreamError, openai_body
from sidegate.runtime.guardrails.external import Endpoint
from sidegate.runtime.guardrails.service import Applied, Guardian
from sidegate.runtime.http.anthropic.messages import anthropic_error_body, anthropic_error_event
from sidegate.runtime.http.gemini.dialect import google_error_body
from sidegate.runtime.plan.guardrails import GuardKind
from sidegate.runtime.responses.dialect import ResponsesDialect
from sidegate.runtime.routing.call import Call
from sidegate.runtime.routing.state import Runtime
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["configure_guards", "guard_answer"]


def guard_answer(guards: Guardian, applied: Applied | None, op: str, call: Call, send: Send) -> Send:
    """`send` as the client's answer goes through the request's guardrails (unchanged without any)."""
    rid = call.request_id
    if applied is None:
        return send
    if applied.during:
        before_terminal = None
        dialect = call.dialect
        if isinstance(dialect, ResponsesDialect) and dialect.on_complete is not None:
            # The response is kept only once the guardrails have passed its last text.
            before_terminal, dialect.on_complete = dialect.on_complete, None
        return guards.stream(applied, op, send, rid, anthropic_error_event if op == "messages" else None,
                             before_terminal)
    if applied.post:
        return guards.answers(applied, op, send, lambda e: anthropic_error_body(e, rid) if op == "messages"
                              else google_error_body(e) if op == "generate_content" else openai_body(e), rid)
    return send


def configure_guards(guards: Guardian, runtime: Runtime) -> None:
    """Give the guardrails a plan, their external checks bound to the shared upstream transport."""
    plan = runtime.plan.guardrails
    transport = runtime.transport
    endpoints: dict[str, Endpoint] = {}
    for rule in plan.rules if plan is not None else ():
        if rule.kind is GuardKind.HTTP and rule.url is not None:
            endpoints[rule.name] = Endpoint(rule.url)
        elif rule.kind is GuardKind.MODERATION and rule.provider is not None:
            provider = runtime.plan.provider(rule.provider)
            endpoints[rule.name] = Endpoint(f"{provider.base_url}/moderations",
                                            runtime.provider_headers.get(rule.provider, ()))

    async def post(url: str, headers: tuple[tuple[str, str], ...], body: bytes, connect_timeout: float,
                   max_answer: int) -> tuple[int, bytes]:
        if transport is None:
            raise UpstreamError("no upstream transport")
        sent = (("content-type", "application/json"), *((k, v) for k, v in headers if k.lower() != "content-type"))
        answer = await transport.send(UpstreamRequest("POST", url, sent, body, connect_timeout, max_answer))
        return answer.status, answer.body

    guards.configure(plan, post, endpoints)
