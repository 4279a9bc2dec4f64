"""Observability: the JSON request and event log (`logs`, written off the loop) and the Prometheus
metrics registry owned by the app (`metrics`), and OpenTelemetry: the request's trace in a context
variable (`context`, no SDK import), and with `observability.tracing` the SDK's exporters
(`tracing`), the GenAI spans (`spans`) and the process's handle (`telemetry`).

May import: the plan.
"""
