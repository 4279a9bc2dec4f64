"""Metering a realtime session: each `response.done` event's usage becomes a spend row and counts
against the key's, team's and user's tpm and budgets while the session goes on; the session itself
is one admitted request (rpm, parallel) settled when it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from sidegate.runtime.governance.gate import Admission, cost_of
from sidegate.runtime.observe.logs import Logger
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.plan import Price
from sidegate.runtime.store.spend import SpendRow, SpendWriter
from sidegate.runtime.upstream.openai_wire import Usage
from sidegate.runtime.upstream.usage_check import InvalidUsage, token_count

__all__ = ["Meter", "realtime_usage"]

_DONE = b'"response.done"'
_CREATED = b'"response.created"'
_DONE_TEXT, _CREATED_TEXT = _DONE.decode(), _CREATED.decode()


def realtime_usage(event: Any) -> Usage | None:
    """The usage of a `response.done` event (`response.usage`: input and output tokens, the cached
    input tokens in `input_token_details`), or None when it has none."""
    response = event.get("response") if isinstance(event, dict) else None
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_token_details")
    cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    prompt = token_count(usage.get("input_tokens"))
    return Usage(prompt=prompt, completion=token_count(usage.get("output_tokens")), cached=min(cached, prompt))


@dataclass(slots=True)
class Meter:
    """What one session used so far, and the hooks that count it."""

    request_id: str
    group: str
    deployment: str
    price: Price | None
    admission: Admission
    gate: Any
    """The access layer's `Gatekeeper`."""
    spend: SpendWriter | None
    logger: Logger
    metrics: Metrics
    responses: int = 0
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    cost: float = 0.0
    started: dict[str, float] = field(default_factory=dict)
    """Response id -> when its `response.created` was seen (the spend row's latency)."""

    def upstream_event(self, data: str | bytes) -> bool:
        """Look at one upstream event; True when it was a `response.done` that spent a budget."""
        if isinstance(data, str):
            if _DONE_TEXT not in data and _CREATED_TEXT not in data:
                return False  # audio deltas and the rest pass unparsed
        elif _DONE not in data and _CREATED not in data:
            return False
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        kind = event.get("type") if isinstance(event, dict) else None
        response = event.get("response") if isinstance(event, dict) else None
        rid = str(response.get("id", "")) if isinstance(response, dict) else ""
        if kind == "response.created":
            if len(self.started) < 64:
                self.started[rid] = time.perf_counter()
            return False
        if kind != "response.done":
            return False
        try:
            usage = realtime_usage(event)
        except InvalidUsage as exc:
            self.logger.warning("realtime_usage_invalid", request_id=self.request_id, error=str(exc)[:200])
            return False
        if usage is None:
            return False
        return self.charge(usage, self.started.pop(rid, None))

    def charge(self, usage: Usage, since: float | None) -> bool:
        cost = cost_of(usage, self.price)
        self.responses += 1
        self.prompt += usage.prompt
        self.completion += usage.completion
        self.cached += usage.cached
        self.cost += cost
        for subject in self.gate.charge(self.admission, self.gate.wall(), usage, cost):
            scope = subject.split(":", 1)[0]
            self.logger.warning("budget_soft_threshold", subject=scope, name=subject.split(":", 1)[1][:12])
            self.metrics.budget_soft_crossings.labels(scope).inc()
        self.metrics.tokens.labels(self.group, self.deployment, "prompt").inc(usage.prompt)
        self.metrics.tokens.labels(self.group, self.deployment, "completion").inc(usage.completion)
        grant = self.admission.grant
        if self.spend is not None:
            self.spend.record_nowait(SpendRow(
                request_id=self.request_id, key_hash=grant.hash if grant else None, team=grant.team if grant else None,
                user=grant.user if grant else None, model=self.group, deployment=self.deployment,
                prompt_tokens=usage.prompt, completion_tokens=usage.completion, cached_tokens=usage.cached,
                reasoning_tokens=0, cost=cost, estimated=False,
                latency_ms=round((time.perf_counter() - since) * 1000, 2) if since is not None else 0.0,
                status=200, created_at=time.time(),
            ))
        return self.gate.spent_budget(self.admission) is not None
