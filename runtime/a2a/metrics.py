"""A2A metrics, registered on the app's registry. Labels are bounded: `agent` is a plan agent name
(or `unknown`), `method` one of the A2A method names (or `other`), `status` an HTTP status,
`error` a JSON-RPC error code from a unary answer (or empty)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidegate.runtime.a2a.registry import Registry

__all__ = ["A2AMetrics", "method_label", "rest_method_label"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
METHODS = frozenset({
    "SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask", "SubscribeToTask",
    "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig", "GetExtendedAgentCard",
    "message/send", "message/stream", "tasks/get", "tasks/cancel", "tasks/resubscribe",
    "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get", "tasks/pushNotificationConfig/list",
    "tasks/pushNotificationConfig/delete", "agent/getAuthenticatedExtendedCard",
})
EXTENDED_CARD_METHODS = frozenset({"GetExtendedAgentCard", "agent/getAuthenticatedExtendedCard"})


def method_label(method: object) -> str:
    """A JSON-RPC method name as a metric label."""
    return method if isinstance(method, str) and method in METHODS else "other"


def rest_method_label(http_method: str, path: str) -> str:
    """An HTTP+JSON call (path under the REST mount, 1.0 or 0.3 `/v1` style) as a metric label."""
    p = path.removeprefix("/v1")
    if p.endswith("/message:send"):
        return "rest:message:send"
    if p.endswith("/message:stream"):
        return "rest:message:stream"
    if p.endswith(":cancel"):
        return "rest:tasks:cancel"
    if p.endswith(":subscribe"):
        return "rest:tasks:subscribe"
    if "/pushNotificationConfigs" in p:
        return "rest:push-config"
    if p.endswith(("/extendedAgentCard", "/card")):
        return "rest:card"
    if p.endswith("/tasks"):
        return "rest:tasks:list"
    if "/tasks/" in p and http_method == "GET":
        return "rest:tasks:get"
    return "rest:other"


class A2AMetrics:
    """Calls, latency and per-agent health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "sidegate_a2a_calls", "A2A calls, by agent, method, HTTP status and JSON-RPC error code.",
            ["agent", "method", "status", "error"], registry=registry,
        )
        self.latency = Histogram(
            "sidegate_a2a_call_duration_seconds", "Time to answer an A2A call (to the stream's end).",
            ["agent", "method"], buckets=_BUCKETS, registry=registry,
        )
        self.up = Gauge("sidegate_a2a_agent_up", "Whether the agent's card was fetched on the last try (1) or not (0).",
                        ["agent"], registry=registry)
        self.failures = Gauge("sidegate_a2a_agent_failures", "Consecutive failed card fetches per agent.",
                              ["agent"], registry=registry)
        self._known: set[str] = set()

    def observe(self, registry: Registry) -> None:
        """Copy agent health into the gauges (at scrape time); agents gone from the plan are removed."""
        names = set(registry.agents)
        for gone in self._known - names:
            self.up.remove(gone)
            self.failures.remove(gone)
        for name, state in registry.agents.items():
            self.up.labels(name).set(1 if state.healthy else 0)
            self.failures.labels(name).set(state.failures)
        self._known = names
