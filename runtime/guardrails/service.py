"""Guardrails around a model call: which apply (the group's, the key's and the team's, plus those
the request names), pre_call on the request's text, post_call on a whole answer; every decision
logged (never the text) and counted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
from prometheus_client import CollectorRegistry, Counter

from sidegate.runtime.asgi import Send
from sidegate.runtime.errors import BadRequest, GatewayError, GuardrailBlocked, Unavailable
from sidegate.runtime.guardrails.detect import Detector
from sidegate.runtime.guardrails.external import Endpoint, External, Post
from sidegate.runtime.guardrails.stream import Decision, StreamGuard
from sidegate.runtime.guardrails.text import Slot, answer_slots, request_slots
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.plan.guardrails import GuardAction, GuardKind, GuardMode, Guardrails

__all__ = ["Applied", "Guardian"]

_OFF_LOOP = 64 * 1024
"""Characters of text past which a scan runs in a worker thread (the loop keeps serving)."""


@dataclass(slots=True)
class Applied:
    """The guardrails of one request, and what they decided."""

    pre: list[Detector]
    post: list[Detector]
    """On the whole answer: post_call ones, and during_call ones on an answer that is not streamed."""
    during: list[Detector] = field(default_factory=list)
    """On a streamed answer: during_call ones, and post_call ones (which cannot wait for a whole answer)."""
    decisions: list[str] = field(default_factory=list)
    """`name:outcome` in order (logged with the request)."""
    blocked: GuardrailBlocked | None = None
    """A post_call block: the answer the client got instead."""
    context: dict[str, Any] = field(default_factory=dict)
    """What an http guardrail is told of the request (ids and names, never a secret)."""


class Guardian:
    """The plan's guardrails, compiled; swapped whole on reload."""

    def __init__(self, logger: Logger, registry: CollectorRegistry) -> None:
        self.logger = logger
        self.decisions = Counter(
            "sidegate_guardrail_decisions", "Guardrail decisions by guardrail, mode and outcome: `passed`, "
            "`blocked`, `masked` or `logged` (found, action log).", ["guardrail", "mode", "outcome"], registry=registry)
        self.detectors: dict[str, Detector] = {}
        self.externals: dict[str, External] = {}
        self.attached: dict[tuple[str, str], tuple[str, ...]] = {}

    def configure(self, plan: Guardrails | None, post: Post | None = None,
                  endpoints: Mapping[str, Endpoint] | None = None) -> None:
        """Take a plan's guardrails; the external ones call `endpoints` (by guardrail name) through
        `post`, the upstream transport seam."""
        self.detectors = {r.name: Detector(r) for r in plan.rules} if plan is not None else {}
        external = [d.rule for d in self.detectors.values() if d.rule.kind in (GuardKind.HTTP, GuardKind.MODERATION)]
        if external and (post is None or endpoints is None or any(r.name not in endpoints for r in external)):
            raise ValueError("external guardrails need the transport seam and an endpoint each")
        self.externals = {r.name: External(r, endpoints[r.name], post) for r in external
                          if post is not None and endpoints is not None}
        attached: dict[tuple[str, str], tuple[str, ...]] = {}
        if plan is not None:
            for where, items in (("group", plan.groups), ("key", plan.keys), ("team", plan.teams)):
                attached.update({(where, a.owner): a.guardrails for a in items})
        self.attached = attached

    def select(self, group: str | None, key: str | None, team: str | None, data: dict[str, Any],
               own: tuple[str, ...] = ()) -> Applied | None:
        """The guardrails for this request (None: none), `guardrails` popped from `data`; `own`: the
        key's guardrails set through the admin API (after its spec ones).

        Attached ones with `default_on` always run; the others only when the request names them.
        A name the request may not use is a 400, so a client cannot widen nor skip its checks."""
        requested = data.pop("guardrails", None)
        allowed: dict[str, None] = {}
        for where, owner in (("group", group), ("key", key), ("team", team)):
            if owner is not None:
                allowed.update(dict.fromkeys(self.attached.get((where, owner), ())))
            if where == "key":
                allowed.update(dict.fromkeys(own))
        gone = [n for n in allowed if n not in self.detectors]
        if gone:  # a key set through the admin API names a guardrail a reloaded plan no longer declares
            raise Unavailable(f"this key's guardrail '{gone[0][:100]}' is not declared by the gateway's plan: "
                              "update the key's guardrails", code="guardrail_unavailable")
        if requested is not None:
            if not isinstance(requested, list) or not all(isinstance(n, str) for n in requested):
                raise BadRequest("'guardrails' must be an array of guardrail names", param="guardrails")
            refused = [n for n in requested if n not in allowed]
            if refused:
                raise BadRequest(f"guardrail '{refused[0][:100]}' is not one this request may use",
                                 code="guardrail_not_allowed", param="guardrails")
        chosen = [n for n in allowed if self.detectors[n].rule.default_on or n in (requested or ())]
        if not chosen:
            return None
        rules = [self.detectors[n] for n in chosen]
        after = [d for d in rules if d.rule.mode is not GuardMode.PRE_CALL]
        pre = [d for d in rules if d.rule.mode is GuardMode.PRE_CALL]
        if data.get("stream") is True:
            return Applied(pre=pre, post=[], during=after)
        return Applied(pre=pre, post=after)

    async def start(self, group: str | None, key: str | None, team: str | None, op: str, data: dict[str, Any],
                    rid: str, extra: dict[str, Any], own: tuple[str, ...] = ()) -> Applied | None:
        """The request's guardrails, pre_call already applied (None: no guardrail applies); their
        decisions go in `extra["guardrails"]` (the request's log line), a block's too."""
        applied = self.select(group, key, team, data, own)
        if applied is not None:
            applied.context = {"id": rid, "op": op, "model": data.get("model"), "group": group, "key": key,
                               "team": team}
            extra["guardrails"] = applied.decisions
            await self.before(applied, op, data, data.get("stream") is True, rid)
        return applied

    async def before(self, applied: Applied, op: str, data: dict[str, Any], stream: bool, rid: str) -> None:
        """pre_call: block (raises), mask `data` in place, or log; refuses what cannot be checked."""
        masking = [d.rule.name for d in applied.during if not _streamable(d)]
        if stream and masking:
            raise BadRequest(f"guardrail '{masking[0]}' needs the whole answer (it masks, checks for an allowed "
                             "topic or calls an external check): send the request with stream false",
                             code="guardrail_unsupported", param="stream")
        if op == "responses" and any(d.rule.action is GuardAction.MASK for d in applied.pre):
            raise BadRequest("masking guardrails do not apply to the Responses API yet: use /v1/chat/completions",
                             code="guardrail_unsupported")
        if applied.pre:
            await self._run(applied, applied.pre, request_slots(op, data), rid)

    async def after(self, applied: Applied, op: str, answer: Any, rid: str) -> None:
        """post_call on a whole answer object (an MCP tool's result): masked in place, or raises."""
        if applied.post:
            await self._run(applied, applied.post, answer_slots(op, answer), rid)

    async def _run(self, applied: Applied, detectors: list[Detector], slots: list[Slot], rid: str) -> None:
        """Each guardrail in order up to the first block: the built-in ones in runs (off the loop
        when the text is large), the external ones one call each."""
        size = sum(len(holder[key]) for holder, key in slots)
        i = 0
        while i < len(detectors):
            external = self.externals.get(detectors[i].rule.name)
            if external is not None:
                try:
                    decisions = [await self._external(external, applied, slots)]
                except Unavailable:
                    self._record(applied, [(external.rule.name, external.rule.mode.value, "unavailable", {})], rid)
                    raise
                i += 1
            else:
                j = i
                while j < len(detectors) and detectors[j].rule.name not in self.externals:
                    j += 1
                if size > _OFF_LOOP:  # decisions are logged back on the loop (the logger is the loop's)
                    decisions = await trio.to_thread.run_sync(_check, detectors[i:j], slots)
                else:
                    decisions = _check(detectors[i:j], slots)
                i = j
            self._record(applied, decisions, rid)
            name, mode, outcome, _ = decisions[-1] if decisions else ("", "", "", {})
            if outcome == "blocked":
                raise GuardrailBlocked(name, mode)

    async def _external(self, external: External, applied: Applied, slots: list[Slot]) -> Decision:
        mode = external.rule.mode.value
        outcome, fields, masked = await external.check([holder[key] for holder, key in slots], mode, applied.context)
        if masked is not None:
            if applied.context.get("op") == "responses":  # Responses input cannot be rewritten yet: refused
                return external.rule.name, mode, "blocked", {"detail": "mask_unsupported"}
            for (holder, key), text in zip(slots, masked, strict=True):
                holder[key] = text
        return external.rule.name, mode, outcome, fields

    def _record(self, applied: Applied, decisions: list[Decision], rid: str) -> None:
        for name, mode, outcome, fields in decisions:
            applied.decisions.append(f"{name}:{outcome}")
            self.decisions.labels(name, mode, outcome).inc()
            if outcome != "passed":
                self.logger.info("guardrail", request_id=rid, guardrail=name, mode=mode, outcome=outcome, **fields)

    def stream(self, applied: Applied, op: str, send: Send, rid: str,
               anthropic_event: Callable[[GatewayError], bytes] | None = None,
               before_terminal: Callable[[], Awaitable[None]] | None = None) -> Send:
        """`send` with during_call applied to a streamed answer (see `stream.StreamGuard`)."""

        def record(decisions: list[Decision]) -> None:
            self._record(applied, decisions, rid)

        return StreamGuard(op, applied.during, send, record, anthropic_event, before_terminal)

    def answers(self, applied: Applied, op: str, send: Send, error_body: Callable[[GatewayError], bytes],
                rid: str) -> Send:
        """`send` with post_call applied to a whole 200 answer (masked, or replaced by a 400)."""
        start: MutableMapping[str, Any] | None = None
        chunks: list[bytes] = []

        async def guarded(message: MutableMapping[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] == 200:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, headers, body = await self._answer(applied, op, start, b"".join(chunks), error_body, rid)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return guarded

    async def _answer(self, applied: Applied, op: str, start: MutableMapping[str, Any], body: bytes,
                      error_body: Callable[[GatewayError], bytes], rid: str) -> tuple[int, list[Any], bytes]:
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        slots = answer_slots(op, answer)
        if slots:
            try:
                await self._run(applied, applied.post, slots, rid)
                body = orjson.dumps(answer) if any(d.rule.action is GuardAction.MASK for d in applied.post) else body
            except GuardrailBlocked as blocked:
                applied.blocked = blocked
                body = error_body(blocked)
                headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                return 400, [*headers, (b"content-length", str(len(body)).encode())], body
        return start["status"], [*headers, (b"content-length", str(len(body)).encode())], body


def _streamable(d: Detector) -> bool:
    """Whether a guardrail can check a stream as it passes (masking, and an `allowed` topics list,
    need the whole answer)."""
    return (d.rule.action is not GuardAction.MASK and not d.rule.allowed_keywords
            and d.rule.kind not in (GuardKind.HTTP, GuardKind.MODERATION))


def _check(detectors: Iterable[Detector], slots: list[Slot]) -> list[Decision]:
    """Each guardrail's decision in order, up to the first block (masking rewrites `slots`)."""
    out: list[Decision] = []
    for d in detectors:
        rule = d.rule
        mode = rule.mode.value
        if rule.action is GuardAction.MASK:
            found = 0
            for holder, key in slots:
                holder[key], n = d.mask(holder[key])
                found += n
            out.append((rule.name, mode, "masked" if found else "passed", {"findings": found}))
            continue
        detail = d.violation([holder[key] for holder, key in slots])
        if detail is None:
            out.append((rule.name, mode, "passed", {}))
        elif rule.action is GuardAction.LOG:
            out.append((rule.name, mode, "logged", {"detail": detail}))
        else:
            out.append((rule.name, mode, "blocked", {"detail": detail}))
            break
    return out
