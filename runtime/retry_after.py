"""Upstream `retry-after-ms` / `retry-after` headers as a finite, bounded number of seconds.

Upstream numbers are data: `inf`, `nan`, `1e11`, negative values or garbage must not take a deployment
out until restart or crash a request. A value that cannot be read is treated as absent; a huge one is
capped at :data:`RETRY_AFTER_CAP`. The router bounds it further (the group's cooldown duration for
keeping the deployment out, `retry.max_retry_after` and the request's remaining deadline for waiting).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx

__all__ = ["RETRY_AFTER_CAP", "parse_retry_after", "retry_after_header", "seconds_value"]

RETRY_AFTER_CAP = 3600.0
"""No upstream Retry-After is believed beyond an hour."""


def _number(text: str, scale: float = 1.0) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or value < 0:
        return None
    return min(value * scale, RETRY_AFTER_CAP)  # inf and 1e11 included


def seconds_value(text: str) -> float | None:
    """A number of seconds written by an upstream (Gemini's `retryDelay` without its `s`), bounded
    like a Retry-After; None when it is not a finite non-negative number."""
    return _number(text.strip()[:64])


def _date(text: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_CAP)


def parse_retry_after(headers: httpx.Headers | Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` (milliseconds) or `retry-after` (seconds or an HTTP date), in
    [0, RETRY_AFTER_CAP]; None when neither header holds a readable value. `now` is the wall clock
    (for HTTP dates), `time.time()` by default."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        seconds = _number(raw_ms.strip()[:64], 0.001)
        if seconds is not None:
            return seconds
    raw = headers.get("retry-after")
    if raw:
        text = raw.strip()[:64]
        value = _number(text)
        if value is None and any(c.isalpha() for c in text):
            value = _date(text, time.time() if now is None else now)
        return value
    return None


def retry_after_header(seconds: float) -> bytes:
    """A Retry-After value for clients: whole seconds, at least 1."""
    if not math.isfinite(seconds):
        seconds = RETRY_AFTER_CAP
    return str(max(1, math.ceil(min(max(seconds, 0.0), RETRY_AFTER_CAP)))).encode()
