"""Guardrails: the built-in detectors (`detect`: secret presets, keywords, PII with checksums) and
their application to a request's text and to a whole answer (`apply`), with the decisions logged
and counted (`metrics`). Every pattern runs in linear time (bounded repeats, no nesting); the text
is scanned off the loop when it is large.
May import: runtime.plan, runtime.errors, runtime.asgi, runtime.observe.
"""
