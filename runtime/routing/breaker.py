"""Sans-IO circuit breaker and latency estimate for one deployment.

Outcomes are counted over a sliding `window` (in 20 buckets, so memory does not grow with traffic);
successes do not reset the count. closed -> open after `failures` failures of one kind (429s apart
from 5xx/timeouts/connect errors) within the window, or when the window's error rate (429s
excluded) reaches `error_rate` with at least `min_requests` requests; open -> half-open once
`duration` has passed, letting exactly one probe request through; half-open -> closed on its
success, -> open again on its failure. The caller says whether the deployment is its group's last
available one: with `keep_last` such a deployment is never opened (a lone deployment never cools
down). A Retry-After from the upstream keeps the deployment out until it has passed (at most
`duration`), apart from the circuit.
"""

from __future__ import annotations

import enum
from collections import deque

from sidegate.runtime.plan import CooldownPolicy

__all__ = ["Breaker", "Circuit", "FailureKind"]

_ALPHA = 0.3
"""Weight of the newest sample in the latency moving averages."""

_BUCKETS = 20
"""Buckets per window."""


class Circuit(enum.Enum):
    """Breaker states (the value is the metric's number)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class FailureKind(enum.Enum):
    """What kind of failure an attempt had (429s are counted apart from the rest)."""

    RATE_LIMIT = "429"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECT = "connect"


class _Window:
    """Requests, failures and 429s over a sliding window, in fixed-width buckets."""

    __slots__ = ("_buckets", "failed", "limited", "requests")

    def __init__(self) -> None:
        self._buckets: deque[list[float]] = deque()  # [start, requests, failed, limited]
        self.requests = 0
        self.failed = 0
        self.limited = 0

    def add(self, now: float, window: float, *, failed: bool = False, limited: bool = False) -> None:
        self.expire(now, window)
        width = window / _BUCKETS
        if not self._buckets or now >= self._buckets[-1][0] + width:
            self._buckets.append([now, 0, 0, 0])
        b = self._buckets[-1]
        b[1] += 1
        b[2] += failed
        b[3] += limited
        self.requests += 1
        self.failed += failed
        self.limited += limited

    def expire(self, now: float, window: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - window:
            _, n, f, r = self._buckets.popleft()
            self.requests -= int(n)
            self.failed -= int(f)
            self.limited -= int(r)

    def clear(self) -> None:
        self._buckets.clear()
        self.requests = self.failed = self.limited = 0


class Breaker:
    """One deployment's health as seen by the router."""

    __slots__ = (
        "_window",
        "blocked_until",
        "circuit",
        "failures_total",
        "last_error",
        "last_error_at",
        "last_error_kind",
        "open_until",
        "opened_total",
        "per_token",
        "probing",
        "ttft",
    )

    def __init__(self) -> None:
        self.circuit = Circuit.CLOSED
        self.open_until = 0.0
        self.blocked_until = 0.0
        """Kept out by an upstream Retry-After until then (apart from the circuit)."""
        self.probing = False
        self._window = _Window()
        self.failures_total = 0
        self.opened_total = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        """Trio clock time of the last failure."""
        self.last_error_kind: FailureKind | None = None
        self.ttft: float | None = None
        """Moving average of time to first byte of streams (seconds)."""
        self.per_token: float | None = None
        """Moving average of latency per output token of whole answers (seconds)."""

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (moves open -> half-open when its time has come)."""
        if now < self.blocked_until:
            return False
        if self.circuit is Circuit.OPEN:
            if now < self.open_until:
                return False
            self.circuit = Circuit.HALF_OPEN
            self.probing = False
        if self.circuit is Circuit.HALF_OPEN:
            return not self.probing
        return True

    def rate_limited(self, now: float) -> bool:
        """Kept out only by an upstream Retry-After (its circuit would let a request through)."""
        if now >= self.blocked_until:
            return False
        return self.circuit is not Circuit.OPEN or now >= self.open_until

    def state(self, now: float) -> str:
        """`closed`, `half_open`, `open`, or `rate_limited` (kept out by a Retry-After)."""
        self.available(now)
        if self.circuit is Circuit.OPEN:
            return "open"
        if now < self.blocked_until:
            return "rate_limited"
        return self.circuit.name.lower()

    def wait(self, now: float) -> float:
        """Seconds until this deployment may be available again."""
        until = max(self.blocked_until, self.open_until if self.circuit is Circuit.OPEN else 0.0)
        return max(0.0, until - now)

    def begin(self) -> None:
        """A request is being sent (in half-open state it is the one probe)."""
        if self.circuit is Circuit.HALF_OPEN:
            self.probing = True

    def success(self, now: float, policy: CooldownPolicy, *, ttft: float | None = None,
                per_token: float | None = None) -> None:
        """The request succeeded: count it; a half-open (or open) breaker closes with a fresh window."""
        if self.circuit is not Circuit.CLOSED:
            self.circuit = Circuit.CLOSED
            self._window.clear()
        self.probing = False
        self._window.add(now, policy.window)
        if ttft is not None:
            self.ttft = ttft if self.ttft is None else (1 - _ALPHA) * self.ttft + _ALPHA * ttft
        if per_token is not None:
            self.per_token = per_token if self.per_token is None else (1 - _ALPHA) * self.per_token + _ALPHA * per_token

    def failure(
        self,
        now: float,
        kind: FailureKind,
        policy: CooldownPolicy,
        retry_after: float | None = None,
        *,
        error: str | None = None,
        last: bool = False,
    ) -> None:
        """The request failed; open the breaker when the policy says so. `last`: no other deployment
        of the group is available now (with `keep_last` this one then stays in)."""
        self.failures_total += 1
        self.probing = False
        self.last_error, self.last_error_at, self.last_error_kind = error, now, kind
        if retry_after is not None and retry_after > 0:
            self.blocked_until = max(self.blocked_until, now + min(retry_after, policy.duration))
        limited = kind is FailureKind.RATE_LIMIT
        self._window.add(now, policy.window, failed=not limited, limited=limited)
        kept = policy.keep_last and last
        if self.circuit is Circuit.HALF_OPEN:
            if kept:
                self.circuit = Circuit.CLOSED  # the probe failed, but nothing else can serve
            else:
                self._open(now, policy)
            return
        if self.circuit is Circuit.CLOSED and not kept and self._tripped(policy):
            self._open(now, policy)

    def _tripped(self, policy: CooldownPolicy) -> bool:
        w = self._window
        if w.failed >= policy.failures or w.limited >= policy.failures:
            return True
        if policy.error_rate is None or w.requests < policy.min_requests:
            return False
        return w.failed / w.requests >= policy.error_rate

    def _open(self, now: float, policy: CooldownPolicy) -> None:
        self.circuit = Circuit.OPEN
        self.open_until = now + policy.duration
        self.opened_total += 1
        self._window.clear()
