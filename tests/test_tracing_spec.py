"""`observability.tracing` in the spec: lowered into the plan with secret references only, and bad
values refused with a diagnostic at their node."""

from __future__ import annotations

import os

from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import OtlpProtocol
from sidegate.runtime.plan.canonical import dumps, loads

BASE = "version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"


def _compile(tracing: str):  # type: ignore[no-untyped-def]
    return compile_text(BASE + "observability:\n  tracing:\n" + tracing, "spec.yaml")


def test_tracing_lowers_with_references_only() -> None:
    os.environ["LANGFUSE_AUTH_TEST"] = "cGstbGYtc2VjcmV0LXZhbHVl"
    result = _compile('    endpoint: https://cloud.langfuse.com/api/public/otel\n'
                      '    headers: {Authorization: "Basic ${LANGFUSE_AUTH_TEST}"}\n'
                      '    sampling: 0.25\n    resource: {service.name: checkout}\n    logs: true\n'
                      '    timeout: 3s\n    queue_size: 100\n')
    assert result.plan is not None, [d.format_text() for d in result.diagnostics]
    t = result.plan.observability.tracing
    assert t is not None and t.protocol is OtlpProtocol.HTTP and t.sampling == 0.25 and t.logs and not t.metrics
    assert t.timeout == 3.0 and t.queue_size == 100 and t.metrics_interval == 60.0 and not t.content
    assert dict(t.resource) == {"service.name": "checkout"}
    text = dumps(result.plan)
    assert "cGstbGYtc2VjcmV0LXZhbHVl" not in text and "LANGFUSE_AUTH_TEST" in text
    assert loads(text) == result.plan


def test_no_tracing_section_is_none() -> None:
    result = compile_text(BASE, "spec.yaml")
    assert result.plan is not None and result.plan.observability.tracing is None


def test_bad_tracing_values_are_diagnosed_at_their_node() -> None:
    result = _compile('    endpoint: http://collector:4318/v1/traces\n    protocol: grpc\n'
                      '    headers: {x-api-key: literal-key-value}\n    metrics_interval: 100ms\n    timeout: 0s\n')
    found = {(d.code, d.pointer) for d in result.diagnostics if d.is_error}
    assert found == {
        ("observability.grpc-path", "/observability/tracing/endpoint"),
        ("secret.literal", "/observability/tracing/headers/x-api-key"),
        ("observability.interval-range", "/observability/tracing/metrics_interval"),
        ("observability.timeout-range", "/observability/tracing/timeout"),
    }
    assert all("literal-key-value" not in d.message for d in result.diagnostics)


def test_unknown_and_out_of_range_fields_are_schema_errors() -> None:
    result = _compile("    sampling: 1.5\n    exporter: zipkin\n")
    codes = {d.code for d in result.diagnostics}
    assert "schema.unknown-field" in codes and result.plan is None
