"""Prometheus metrics, in a registry owned by the app (not the global one).

Label values are bounded: `model` is the group name from the plan (a wildcard group counts once,
not per requested name; unknown names count as `unknown`), `deployment` a target id, `status` an
HTTP status code.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["STATES", "Metrics"]

STATES = {"closed": 0, "half_open": 1, "open": 2, "rate_limited": 3}
"""The value of `sidegate_deployment_state` for each breaker state."""
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The sidecar's metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sidegate_requests", "Requests answered, by model group, deployment and status.",
            ["model", "deployment", "status"], registry=r,
        )
        self.latency = Histogram(
            "sidegate_request_duration_seconds", "Total time to answer a request (to the stream's end).",
            ["model", "deployment"], buckets=_BUCKETS, registry=r,
        )
        self.upstream_latency = Histogram(
            "sidegate_upstream_duration_seconds", "Time waiting on the upstream.",
            ["model", "deployment"], buckets=_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("sidegate_requests_in_flight", "Requests being served.", ["model"], registry=r)
        self.upstream_errors = Counter(
            "sidegate_upstream_errors", "Upstream failures, by kind (status code, connect, timeout, broken).",
            ["model", "deployment", "kind"], registry=r,
        )
        self.tokens = Counter(
            "sidegate_tokens", "Tokens reported by upstreams, by direction (prompt, completion).",
            ["model", "deployment", "direction"], registry=r,
        )
        self.reloads = Counter("sidegate_reloads", "Plans reloaded successfully.", registry=r)
        self.reload_failures = Counter(
            "sidegate_reload_failures", "Reloads refused (spec errors); the last good plan keeps serving.",
            registry=r,
        )
        self.deployment_state = Gauge(
            "sidegate_deployment_state", "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open, "
            "3 rate-limited (kept out by an upstream Retry-After).",
            ["model", "deployment"], registry=r,
        )
        self.deployment_failures = Gauge(
            "sidegate_deployment_failures", "Failures the breaker counted per deployment since start.",
            ["model", "deployment"], registry=r,
        )
        self.deployment_last_error = Gauge(
            "sidegate_deployment_last_error_timestamp_seconds",
            "Unix time of the deployment's last failure (its text is in /health/deployments).",
            ["model", "deployment", "kind"], registry=r,
        )
        self.deployment_latency = Gauge(
            "sidegate_deployment_latency_seconds",
            "The router's latency estimate per deployment (time to first byte for streams, per token otherwise).",
            ["model", "deployment", "kind"], registry=r,
        )
        self.mcp_calls = Counter(
            "sidegate_mcp_tool_calls", "MCP tools/call requests by server, tool and status (ok, tool_error, "
            "denied, unavailable, error); refused names count as tool `-`, names never listed as `other`.",
            ["server", "tool", "status"], registry=r,
        )
        self.mcp_latency = Histogram(
            "sidegate_mcp_tool_call_duration_seconds", "Time to answer an MCP tools/call, by server.",
            ["server"], buckets=_BUCKETS, registry=r,
        )
        self.plan_info = Gauge("sidegate_plan_info", "The plan being served (1), by digest.", ["digest"], registry=r)
        self.spend_pending = Gauge(
            "sidegate_spend_rows_pending", "Spend rows queued or being retried, not yet in the store.", registry=r,
        )
        self.spend_written = Counter("sidegate_spend_rows_written", "Spend rows written to the store.", registry=r)
        self.spend_write_failures = Counter(
            "sidegate_spend_write_failures", "Spend batch writes the store refused (each is retried).", registry=r,
        )
        self.spend_dropped = Counter(
            "sidegate_spend_rows_dropped", "Spend rows dropped, by reason: `overflow` (the retry buffer was full; "
            "oldest first) or `rejected` (the database refused the row itself).", ["reason"], registry=r,
        )
        self.spend_journaled = Counter(
            "sidegate_spend_rows_journaled", "Spend rows written to the local journal (the store could not take "
            "them: an outage past the memory buffer, or at shutdown).", registry=r,
        )
        self.spend_replayed = Counter(
            "sidegate_spend_rows_replayed", "Journaled spend rows replayed into the store (each once).", registry=r,
        )
        for reason in ("overflow", "rejected"):
            self.spend_dropped.labels(reason)
        self.budget_soft_crossings = Counter(
            "sidegate_budget_soft_crossings", "Requests whose spend crossed a budget's soft threshold, by scope "
            "(key, team).", ["scope"], registry=r,
        )
        self.otlp_dropped = Counter(
            "sidegate_otlp_dropped", "OpenTelemetry items dropped instead of exported, by signal (spans, logs) and "
            "reason: `queue_full` (the export queue was full), `export_failed` (the collector did not take the batch "
            "within observability.tracing.timeout), `shutdown` (emitted while stopping).", ["signal", "reason"],
            registry=r,
        )
        self._digest: str | None = None

    def set_plan(self, digest: str) -> None:
        """Point `sidegate_plan_info` at the plan now serving."""
        if self._digest is not None:
            self.plan_info.remove(self._digest)
        self.plan_info.labels(digest).set(1)
        self._digest = digest

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
