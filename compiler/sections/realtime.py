"""The `realtime` section: the limits of Realtime API sessions (defaults when it is absent)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sidegate.compiler.diagnostics import Collector
from sidegate.runtime.plan import Realtime

__all__ = ["resolve_realtime"]


def resolve_realtime(spec: Mapping[str, Any], seconds: Callable[[str], float], size: Callable[[str], int],
                     out: Collector) -> Realtime:
    """The plan's session limits from `spec["realtime"]` (schema-valid)."""
    raw = spec.get("realtime", {})
    duration = seconds(raw.get("max_duration", "30m"))
    if duration <= 0:
        out.error("realtime.limit-range", "/realtime/max_duration", "max_duration must be longer than 0s")
    message = size(raw.get("max_message", "16MiB"))
    if message < 1024:
        out.error("realtime.limit-range", "/realtime/max_message",
                  "max_message must be at least 1KiB (a session.update alone is longer)")
    return Realtime(max_duration=duration, max_sessions_per_key=raw.get("max_sessions_per_key"),
                    max_message=message)
