"""The sidecar's OpenTelemetry handle: what the HTTP boundary, the routing loop and the logger call.

Built once at start from the plan's `observability.tracing` (a reload keeps it; a changed section
needs a restart). Everything here is cheap on the event loop: spans are recorded as plain data, log
records and metric points are handed to the SDK, whose own threads export them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import trio
from opentelemetry._logs import SeverityNumber

from sidegate.runtime.observe.context import CURRENT
from sidegate.runtime.observe.metrics import Metrics
from sidegate.runtime.observe.record import Recorder
from sidegate.runtime.observe.spans import Attempt, Incoming, Request, extract, operation
from sidegate.runtime.observe.tracing import Exporters, build_exporters
from sidegate.runtime.plan import Family, LogLevel, Provider, Tracing

__all__ = ["GenAiMetrics", "Telemetry"]

_FAMILY = {Family.OPENAI: "openai", Family.AZURE: "azure.ai.openai", Family.ANTHROPIC: "anthropic",
           Family.GEMINI: "gcp.gemini", Family.VERTEX: "gcp.vertex_ai", Family.BEDROCK: "aws.bedrock",
           Family.COHERE: "cohere", Family.VOYAGE: "voyage", Family.MOCK: "sidegate.mock"}
_TYPES = {"groq": "groq", "deepseek": "deepseek", "mistral": "mistral_ai", "xai": "x_ai", "perplexity": "perplexity",
          "openai-compatible": "openai"}
"""`gen_ai.provider.name` of the catalog's OpenAI-compatible types the conventions name."""
_SEVERITY = {LogLevel.DEBUG: SeverityNumber.DEBUG, LogLevel.INFO: SeverityNumber.INFO,
             LogLevel.WARNING: SeverityNumber.WARN, LogLevel.ERROR: SeverityNumber.ERROR}
# The conventions' advised bucket boundaries.
_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
_SECONDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]


class GenAiMetrics:
    """`gen_ai.client.token.usage`, `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`."""

    def __init__(self, meter: Any) -> None:
        self.tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                             description="Tokens used by an upstream call, by token type.",
                                             explicit_bucket_boundaries_advisory=_TOKENS)
        self.duration = meter.create_histogram("gen_ai.server.request.duration", unit="s",
                                               description="Time to answer a model call (to the stream's end).",
                                               explicit_bucket_boundaries_advisory=_SECONDS)
        self.ttft = meter.create_histogram("gen_ai.server.time_to_first_token", unit="s",
                                           description="Time from the request to the first event of a stream.",
                                           explicit_bucket_boundaries_advisory=_TTFT)

    def record(self, call: Any, request: Request, seconds: float, error: str | None) -> None:
        """One request's points (attributes bounded: the group, not the requested name)."""
        attributes: dict[str, str] = {"gen_ai.operation.name": operation(call.op), "gen_ai.request.model": call.group}
        if request.provider:
            attributes["gen_ai.provider.name"] = request.provider
        if request.response_model:
            attributes["gen_ai.response.model"] = request.response_model
        if error is not None:
            attributes["error.type"] = error
        self.duration.record(seconds, attributes)
        if request.ttft is not None:
            self.ttft.record(request.ttft, attributes)
        if call.usage is not None:
            self.tokens.record(call.usage.prompt, {**attributes, "gen_ai.token.type": "input"})
            self.tokens.record(call.usage.completion, {**attributes, "gen_ai.token.type": "output"})


class Telemetry:
    """Spans, log records and GenAI metrics for one sidecar process."""

    def __init__(self, config: Tracing, headers: Mapping[str, str], metrics: Metrics) -> None:
        self.config = config
        self.exporters: Exporters = build_exporters(config, dict(headers) if headers else None, metrics.otlp_dropped)
        self.dropped = metrics.otlp_dropped
        self.recorder = Recorder(self.exporters.tracer_provider, self.exporters.span_queue, self.exporters.ratio)
        self.content = config.content
        logs = self.exporters.logger_provider
        self._logs = None if logs is None else logs.get_logger("sidegate")
        meter = self.exporters.meter_provider
        self.genai = None if meter is None else GenAiMetrics(meter.get_meter("sidegate"))
        self._addresses: dict[str, tuple[str, int | None]] = {}

    # --- spans

    def request(self, scope: MutableMapping[str, Any], op: str, request_id: str) -> Request:
        """The server span of a model call, under the client's `traceparent` when it sent one."""
        return Request(self, scope, op, request_id)

    def incoming(self, scope: MutableMapping[str, Any]) -> Incoming:
        """The client's context of an MCP or A2A request (its tool-call or relay span opens under it)."""
        return Incoming(self, extract(scope["headers"]))

    def attempt(self, request: Request, group: Any, dep: Any, model: str, number: int, op: str,
                data: dict[str, Any], hedged: bool, fallback: bool) -> Attempt:
        """The client span of one upstream attempt."""
        return Attempt(request, group, dep, model, number, op, data, hedged, fallback, trio.current_time())

    @staticmethod
    def provider_name(provider: Provider) -> str:
        """`gen_ai.provider.name` of a provider."""
        if provider.family is Family.OPENAI:
            return _TYPES.get(provider.type, provider.type if provider.type != "openai" else "openai")
        return _FAMILY[provider.family]

    def address(self, base_url: str) -> tuple[str, int | None]:
        """(`server.address`, `server.port`) of an upstream base URL (cached)."""
        found = self._addresses.get(base_url)
        if found is None:
            try:
                parts = urlsplit(base_url)
                found = (parts.hostname or "", parts.port)
            except ValueError:
                found = ("", None)
            self._addresses[base_url] = found
        return found

    # --- logs

    def emit_log(self, level: LogLevel, event: str, line: str) -> None:
        """Hand one log line (already scrubbed) to the OTLP log pipeline, with the current trace."""
        if self._logs is None:
            return
        scope = CURRENT.get()
        context = getattr(scope, "context", None)
        self._logs.emit(timestamp=time.time_ns(), context=context, severity_number=_SEVERITY[level],
                        severity_text=level.value.upper(), body=line, event_name=event,
                        attributes={"sidegate.event": event})

    # --- background

    async def run(self, warn: Any, every: float = 30.0) -> None:
        """Every `every` seconds, log one warning line when telemetry was dropped since the last
        (the SDK's own complaints are kept off stderr: they are not JSON)."""
        last = 0.0
        while True:
            await trio.sleep(every)
            total = sum(sample.value for metric in self.dropped.collect() for sample in metric.samples
                        if sample.name.endswith("_total"))
            if total > last:
                warn("otlp_dropped", dropped=int(total - last), error=self.exporters.errors.last)
                last = total

    def shutdown(self, budget: float) -> None:
        """Flush and stop the exporters within `budget` seconds (blocking: a worker thread)."""
        self.exporters.shutdown(budget)
