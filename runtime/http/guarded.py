"""The guardrails' hold on a model call's answer: post_call on a whole answer, during_call on a
stream, each speaking the client's dialect (Anthropic's error shapes for `/v1/messages`)."""

from __future__ import annotations

from sidegate.runtime.asgi import Send
from sidegate.runtime.errors import openai_body
from sidegate.runtime.guardrails.service import Applied, Guardian
from sidegate.runtime.http.anthropic.messages import anthropic_error_body, anthropic_error_event
from sidegate.runtime.responses.dialect import ResponsesDialect
from sidegate.runtime.routing.call import Call

__all__ = ["guard_answer"]


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
        return guards.answers(applied, op, send, lambda e: anthropic_error_body(e, rid)
                              if op == "messages" else openai_body(e), rid)
    return send
